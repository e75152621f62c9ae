"""The site's own train/validation split, and which sets of cases may be released (disclosure policy R6).

<work>/validation/split.json      {"validation-fraction", "cases": {case_id: "validation" | "training"}}
<work>/validation/released.json   {"validation": [case ids last reported], "training": [case ids last trained on]}

The split is made once, when the site first has at least 2 usable cases: a share `validation-fraction` (the
site's setting, rounded, at least 1 and at most n − 1) goes to validation, chosen by the order of keyed hashes of
the case ids under the site secret. A case that appears later is assigned by its own keyed hash (validation with
probability `validation-fraction`) and keeps that assignment; nothing already assigned ever moves. The
coordinator's run config has no say: it has no setting for the split, and its `seed` is not used. Delete
split.json (and released.json) to start afresh; the next report then counts as a first one.

Both files stay in the work folder: they name cases.
"""

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from logging import Logger
from pathlib import Path

from models.shared.atomic import atomic_write_text
from models.shared.node_config import DEFAULT_VALIDATION_FRACTION
from site_app.settings.secret import keyed_digest, site_secret

SPLIT_FILE = Path("validation") / "split.json"
RELEASED_FILE = Path("validation") / "released.json"
VALIDATION, TRAINING = "validation", "training"


@dataclass(frozen=True)
class SiteSplit:
    """Case ids of the site's usable cases by role, in case-id order."""

    training: tuple[str, ...]
    validation: tuple[str, ...]


def site_split(
    work: Path, case_ids: Iterable[str], validation_fraction: float | None, log: Logger
) -> SiteSplit:
    """The stored split of the usable `case_ids`; made on first use, extended with cases it has not seen.

    `validation_fraction` None (a site-local command without the node config) uses the stored split's own.
    """
    present = sorted(set(case_ids))
    secret = site_secret(work)
    path = work / SPLIT_FILE
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if validation_fraction is None:
        validation_fraction = float(stored["validation-fraction"]) if stored else DEFAULT_VALIDATION_FRACTION
    if stored is None:
        if len(present) < 2:
            raise ValueError(
                f"a site needs at least 2 usable cases to train and validate, found {len(present)}"
            )
        n_val = min(len(present) - 1, max(1, round(len(present) * validation_fraction)))
        ranked = sorted(present, key=lambda case: keyed_digest(secret, "split", case))
        roles = {case: VALIDATION if rank < n_val else TRAINING for rank, case in enumerate(ranked)}
        _write(path, validation_fraction, roles)
        log.info(
            "validation split made by the site: %d validation and %d training cases (validation-fraction %g);"
            " every run reuses it",
            n_val,
            len(present) - n_val,
            validation_fraction,
        )
    else:
        roles = dict(stored["cases"])
        new = [case for case in present if case not in roles]
        for case in new:
            share = int.from_bytes(keyed_digest(secret, "split-new", case)[:8], "big") / 2**64
            roles[case] = VALIDATION if share < validation_fraction else TRAINING
        if new:
            _write(path, validation_fraction, roles)
            log.info(
                "%d new case(s) added to the site's split: %d to validation, %d to training",
                len(new),
                sum(roles[c] == VALIDATION for c in new),
                sum(roles[c] == TRAINING for c in new),
            )
    return SiteSplit(
        training=tuple(c for c in present if roles[c] == TRAINING),
        validation=tuple(c for c in present if roles[c] == VALIDATION),
    )


@dataclass(frozen=True)
class ReleasableSet:
    """The cases a result may be computed on (None: none may), and why, for the site log and the reply."""

    cases: frozenset[str] | None
    reason: str


def released_set(work: Path, purpose: str, available: Collection[str], k: int) -> ReleasableSet:
    """Which of the `available` cases a validation (purpose "validation") or training ("training") may use.

    The set last released for this purpose, or any set differing from it by at least k cases (R6): a set closer to
    it than that would let the coordinator difference one case out of two results. The reason (sent in a
    suppressed or declined reply) names k, never the number of changed cases.
    """
    available = frozenset(available)
    last = _released(work).get(purpose)
    if last is None:
        return ReleasableSet(available, "first release")
    last = frozenset(last)
    changed = len(available ^ last)
    if changed == 0:
        return ReleasableSet(available, "same cases as last released")
    if changed >= k:
        return ReleasableSet(available, f"at least {k} cases differ from the last released set")
    if last <= available:
        return ReleasableSet(
            last,
            f"fewer than {k} cases added since the last released {purpose} set: the last set is used until"
            f" at least {k} have been added",
        )
    return ReleasableSet(
        None,
        f"the {purpose} cases differ from the set last released by fewer than {k} cases, and the last set is"
        " not available",
    )


def record_released(work: Path, purpose: str, cases: Collection[str]) -> None:
    """Remember the set a result was released on (called just before the reply carrying it is returned)."""
    released = _released(work)
    released[purpose] = sorted(cases)
    atomic_write_text(work / RELEASED_FILE, json.dumps(released, indent=2, sort_keys=True) + "\n")


def _released(work: Path) -> dict[str, list[str]]:
    path = work / RELEASED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write(path: Path, validation_fraction: float, roles: dict[str, str]) -> None:
    payload = {"validation-fraction": validation_fraction, "cases": dict(sorted(roles.items()))}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
