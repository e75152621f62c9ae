"""Runs on a hospital's host: the site's pre-flight, the SuperNode launcher, the app-approval gate, the site's commands."""
