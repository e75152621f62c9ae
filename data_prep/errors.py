"""Exceptions a caller branches on: one case unusable vs. a whole site unusable."""


class CaseError(Exception):
    """One case cannot be used; the message names the file and the problem. The site goes on."""


class SiteDataError(Exception):
    """The site's data folder as a whole is unusable (missing, empty); the message names the path."""
