"""The site-local log: case ids, file names and reasons go here, in the work folder, and nowhere else."""

import logging
from pathlib import Path

SITE_LOGGER = "oncofed.site"


def site_logger(work: Path) -> logging.Logger:
    """A logger writing to <work>/logs/site.log only (not propagated to Flower's streamed log)."""
    logger = logging.getLogger(SITE_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    target = (work / "logs" / "site.log").resolve()
    if not any(getattr(h, "baseFilename", None) == str(target) for h in logger.handlers):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger
