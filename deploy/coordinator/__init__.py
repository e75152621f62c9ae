"""Runs on the coordinator's host: the SuperLink and its proxy, the site registry and revocation, run submission, status."""
