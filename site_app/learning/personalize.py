"""The personalized model (run setting `personalize-epochs`): the global model fine-tuned on this site's own cases.

At each validation after round 0 the site fine-tunes the global model it validates (with its own norm layers under
local-norm) for `personalize-epochs` epochs on its released training set, with the federation's training code and
a seeded random stream of its own, and validates it on the same released validation cases as the global model
(site_app.learning.federated_round.validate_personalized). The model never leaves the site: it is kept in the
run's state folder (site_app.learning.run_state) and as <work>/models/personalized-latest.pt, the model that
`site predict --work` and `oncofed export --work` use by default (site_app.tools.model_choice). Only its aggregates
and those of the paired difference personalized − global leave, under the site's disclosure policy, exactly as
the local-only baseline's do (site_app.learning.local_baseline.paired_aggregates; keys
models.shared.wire.PERSONALIZED_PREFIX and PERSONALIZATION_GAIN_PREFIX).
"""

from pathlib import Path

import torch

from models.model_hash import weights_sha256
from models.weights import save_checkpoint, to_record

MODEL_FILE = "personalized.pt"
"""In the run's state folder."""
LATEST_MODEL = Path("models") / "personalized-latest.pt"
"""In the site's work folder, beside the last global model it validated (site_app.learning.work_records)."""
META_ROLE = "model_role"
"""Checkpoint meta: which model a site checkpoint holds (ROLE_PERSONALIZED; absent: the global model)."""
ROLE_PERSONALIZED, ROLE_GLOBAL = "personalized", "global"
META_PERSONALIZED_FROM = "personalized_from"
"""Checkpoint meta: the SHA-256 (models.model_hash) of the global model it was fine-tuned from."""


def model_role(meta: dict[str, object]) -> str:
    """Which model a checkpoint's or bundle's meta says it holds: ROLE_PERSONALIZED or ROLE_GLOBAL."""
    return ROLE_PERSONALIZED if meta.get(META_ROLE) == ROLE_PERSONALIZED else ROLE_GLOBAL


def model_description(meta: dict[str, object]) -> str:
    """One phrase for people: which model this is (and, personalized, the global model it started from)."""
    if model_role(meta) == ROLE_PERSONALIZED:
        return f"a site's personalized model (fine-tuned from the global model {meta.get(META_PERSONALIZED_FROM)})"
    return "the federation's global model"


def keep_personalized(
    model: torch.nn.Module,
    global_model: torch.nn.Module,
    work: Path,
    state_dir: Path,
    meta: dict[str, object],
) -> Path:
    """Write the personalized model into the run's state folder and as the work folder's latest; returns the latter.

    `meta` is the global model's checkpoint meta at this validation; the role and the global model's hash are
    added, so that a tool can tell whether it personalizes the global model last validated here."""
    record = to_record(model)
    full_meta = {
        **meta,
        META_ROLE: ROLE_PERSONALIZED,
        META_PERSONALIZED_FROM: weights_sha256(global_model.state_dict()),
    }
    save_checkpoint(record, state_dir / MODEL_FILE, full_meta)
    save_checkpoint(record, work / LATEST_MODEL, full_meta)
    return work / LATEST_MODEL
