"""Which model a site's tools use (`site predict --work`, `oncofed export --work`): the site's personalized model
when it has one for the global model it last validated, else that global model; `--global-model` picks the latter.

Both lie in the site's work folder: models/global-latest.pt (site_app.learning.work_records) and
models/personalized-latest.pt (site_app.learning.personalize), which names the global model it was fine-tuned
from by SHA-256 (models.model_hash). A personalized model of an older global model is not used: the note says so.
"""

from dataclasses import dataclass
from pathlib import Path

from models.model_source import ModelSource, ModelSourceError, load_model_source
from site_app.learning.personalize import (
    LATEST_MODEL as PERSONALIZED_LATEST,
)
from site_app.learning.personalize import (
    META_PERSONALIZED_FROM,
    ROLE_GLOBAL,
    ROLE_PERSONALIZED,
    model_description,
    model_role,
)
from site_app.learning.work_records import LATEST_MODEL as GLOBAL_LATEST


@dataclass(frozen=True)
class SiteModel:
    """The chosen model, which one it is (ROLE_PERSONALIZED or ROLE_GLOBAL) and why, for the command's output."""

    source: ModelSource
    role: str
    note: str

    @property
    def path(self) -> Path:
        return Path(self.source.path)


def choose_site_model(work: Path, use_global: bool) -> SiteModel:
    """The personalized model in `work` unless `use_global`, or when it personalizes another global model.

    Raises ModelSourceError when the work folder holds no global model (it never validated one)."""
    global_path = work / GLOBAL_LATEST
    if not global_path.is_file():
        raise ModelSourceError(
            f"{global_path} does not exist: the work folder {work} has not validated a global model yet"
        )
    global_model = load_model_source(global_path)
    if use_global:
        return SiteModel(global_model, ROLE_GLOBAL, "the global model, as asked (--global-model)")
    personal_path = work / PERSONALIZED_LATEST
    if not personal_path.is_file():
        return SiteModel(global_model, ROLE_GLOBAL, "the global model: this site has no personalized model")
    personal = load_model_source(personal_path)
    if personal.meta.get(META_PERSONALIZED_FROM) != global_model.sha256:
        return SiteModel(
            global_model,
            ROLE_GLOBAL,
            "the global model: the site's personalized model was fine-tuned from an older global model",
        )
    return SiteModel(
        personal, ROLE_PERSONALIZED, "the site's personalized model (--global-model for the global one)"
    )


def command_model(model: Path | None, work: Path | None, use_global: bool) -> SiteModel:
    """The model a command's options name: `--model` as given, or the site's choice in `--work`
    (choose_site_model); exactly one of them. Raises ModelSourceError naming what is wrong."""
    if (model is None) == (work is None):
        raise ModelSourceError(
            "give either --model (a checkpoint or bundle) or --work (the site's work folder)"
        )
    if model is not None:
        if use_global:
            raise ModelSourceError(
                "--global-model chooses within --work; with --model the model is the one given"
            )
        source = load_model_source(model)
        role = model_role(source.meta)
        return SiteModel(source, role, f"{model_description(source.meta)}, as given (--model)")
    return choose_site_model(work, use_global)  # type: ignore[arg-type]
