"""What the site and the coordinator say to each other beyond Flower's own records: one definition, both sides.

Issue 9 (site sovereignty) adds two things here; issue 14 collects every other wire key in this module:

- the node-config key through which `oncofed site start` hands the ClientApp the site's own settings file, so
  the inventory is built with the site's [series], [labels] and [limits] rather than defaults;
- the error reply of a site's code-approval gate (deploy/executor_gate.py) when a run brings an app whose FAB
  hash the site has not approved, and its parser on the coordinator (server_app), which files the refusal
  under the site's name.
"""

import re
from dataclasses import dataclass

NODE_SITE_CONFIG = "site-config"
"""Node config: absolute path of the site's site.toml ([series], [labels], [limits]); unset in simulation."""

APP_NOT_APPROVED_CODE = 7
"""Error code of a refusal reply: Flower's ErrorCode.INVALID_FAB (the SuperNode's own "FAB could not be
verified" reply uses it too)."""

APP_NOT_APPROVED = "app not approved by the site"
"""The fixed start of every refusal reason: what the coordinator's log and run folder say."""

_REFUSAL = re.compile(
    rf"^{re.escape(APP_NOT_APPROVED)}: site (?P<site>[a-z0-9][a-z0-9-]*) refused FAB sha256 "
    r"(?P<fab_hash>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class Refusal:
    """One site's refusal of one app: the site's name as it states it, and the SHA-256 of the refused FAB."""

    site: str
    fab_hash: str


def refusal_reason(site: str, fab_hash: str) -> str:
    """The Error reason a site's gate sends (no path, no case: only its name and the app's hash)."""
    return (
        f"{APP_NOT_APPROVED}: site {site} refused FAB sha256 {fab_hash} (the site approves an app with "
        "`oncofed site approve`)"
    )


def parse_refusal(code: int, reason: str) -> Refusal | None:
    """The refusal in an error reply, or None when the error is something else."""
    match = _REFUSAL.match(reason) if code == APP_NOT_APPROVED_CODE else None
    return Refusal(match["site"], match["fab_hash"]) if match else None
