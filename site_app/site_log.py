"""The site-local log: case ids, file names and reasons go here, in the work folder, and nowhere else."""

import logging
from pathlib import Path

SITE_LOGGER = "oncofed.site"
CASE_LEVEL_LOGGERS = (SITE_LOGGER, "data_prep")
"""Loggers whose records may name cases or files: they write to the site log only, never to stderr."""


def site_logger(work: Path) -> logging.Logger:
    """The site's logger, writing to <work>/logs/site.log; data_prep's records go there too (not propagated)."""
    target = (work / "logs" / "site.log").resolve()
    for name in CASE_LEVEL_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if any(getattr(h, "baseFilename", None) == str(target) for h in logger.handlers):
            continue
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    return logging.getLogger(SITE_LOGGER)
