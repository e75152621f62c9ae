"""What the site keeps of each validation in its own work folder, for the site-local report; never sent.

<work>/validation/context.json   the site's paths, its run settings (as used) and the round of the last validation
<work>/validation/per-case.jsonl one line per case per round: {"round", "case_id", "spacing_mm", "metrics"}
<work>/models/global-latest.pt   the last global model the site validated ({"state_dict", "meta"}); with the run
                                 setting `local-norm`, with this site's own norm layers (meta norm_layers "site")
<work>/models/personalized-latest.pt  with `personalize-epochs`, its fine-tuned copy (site_app.learning.personalize)
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from models.model_source import checkpoint_norm_meta, inference_meta
from models.shared.atomic import atomic_write_json
from models.weights import save_checkpoint
from site_app.learning.validation import CaseEvaluation
from site_app.settings.identity import SitePaths
from site_app.settings.run_settings import SiteRunSettings

CONTEXT_FILE = Path("validation") / "context.json"
PER_CASE_FILE = Path("validation") / "per-case.jsonl"
LATEST_MODEL = Path("models") / "global-latest.pt"


@dataclass(frozen=True)
class ValidationContext:
    """Enough to validate again later, from the work folder alone: where the site is and how it validated."""

    site: SitePaths
    run_config: dict[str, object]
    """The run settings the site validated with (SiteRunSettings.as_run_config)."""
    server_round: int

    @property
    def settings(self) -> SiteRunSettings:
        return SiteRunSettings.from_run_config(self.run_config)


def keep_validation(
    site: SitePaths,
    settings: SiteRunSettings,
    server_round: int,
    arrays: ArrayRecord,
    results: Sequence[CaseEvaluation],
) -> None:
    """Record one validation in the work folder: the model as validated here (`arrays`: under local-norm with this
    site's norm layers), the per-case metrics and how to redo it."""
    save_checkpoint(arrays, site.work / LATEST_MODEL, site_model_meta(settings, server_round))
    lines = "".join(
        json.dumps(
            {
                "round": server_round,
                "case_id": r.case_id,
                "spacing_mm": list(r.spacing_mm),
                "metrics": r.metrics,
            },
            sort_keys=True,
        )
        + "\n"
        for r in results
    )
    per_case = site.work / PER_CASE_FILE
    per_case.parent.mkdir(parents=True, exist_ok=True)
    with open(per_case, "a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    context = {
        "site": {"name": site.name, "data": str(site.data), "work": str(site.work)},
        "run_config": settings.as_run_config(),
        "round": server_round,
    }
    atomic_write_json(site.work / CONTEXT_FILE, context)


def site_model_meta(settings: SiteRunSettings, server_round: int) -> dict[str, object]:
    """The meta of a model the site keeps after a validation: preset, round, preprocessing, whose norm layers."""
    pipeline = settings.pipeline
    return {
        "model_preset": settings.model_preset,
        "round": server_round,
        **inference_meta(pipeline.spacing_mm, pipeline.patch_size),
        **checkpoint_norm_meta(settings.local_norm, site=True),
    }


def read_validation_context(work: Path) -> ValidationContext:
    """The last validation's context; a work folder that never validated is a clear error."""
    path = work / CONTEXT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: this work folder has not validated a model yet"
            " (the site writes it during a federated run)"
        )
    payload = json.loads(path.read_text(encoding="utf-8"))
    site = payload["site"]
    return ValidationContext(
        site=SitePaths(name=site["name"], data=Path(site["data"]), work=work),
        run_config=payload["run_config"],
        server_round=int(payload["round"]),
    )
