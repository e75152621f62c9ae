"""Every run setting a site reads, read once through models.shared.run_config into one typed object.

No other site code reads the run config: handlers build SiteRunSettings from `context.run_config` and pass it
(or the values in it) on. The site reads the settings owned by the site, the shared ones and, in a simulation,
the simulation ones.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from data_prep.transforms import PipelineSettings
from models.presets import patch_size
from models.shared.labels import evaluation_regions
from models.shared.node_config import NodeConfig
from models.shared.run_config import (
    BATCH_SIZE,
    EVAL_REGIONS,
    LEARNING_RATE,
    LOCAL_BASELINE,
    LOCAL_EPOCHS,
    LOCAL_NORM,
    MODEL_PRESET,
    PATCH_SIZE,
    PERSONALIZE_EPOCHS,
    PERSONALIZE_LR_SHARE,
    SAMPLES_PER_CASE,
    SEED,
    SIM_DATA,
    SIM_LOCAL_DP_CLIPPING_NORM,
    SIM_LOCAL_DP_NOISE_MULTIPLIER,
    SIM_MIN_LESION_MM3,
    SIM_MIN_POSITION_CASES,
    SIM_MIN_REPORT_CASES,
    SIM_MIN_TRAIN_CASES,
    SIM_SHARE_LOCAL_MODEL,
    SIM_VALIDATION_FRACTION,
    SIM_WORK,
    SPACING_MM,
    TRANSPORT_DTYPE,
)


@dataclass(frozen=True)
class SiteRunSettings:
    model_preset: str
    seed: int
    local_epochs: int
    learning_rate: float
    batch_size: int
    eval_regions: str
    """Name of the region set (models.shared.labels.REGION_SETS); `regions` holds the regions themselves."""
    pipeline: PipelineSettings
    """Spacing, patch size (the model preset's when the run setting is 0) and patches per case."""
    local_norm: bool
    """The norm layers stay at this site (site_app.learning.local_norm); shared with the coordinator."""
    transport_dtype: str
    """The precision of the weights in messages (models.transport); shared with the coordinator."""
    local_baseline: bool
    """Also train and validate a local-only model (site_app.learning.local_baseline)."""
    personalize_epochs: int
    """Fine-tune a personalized model for this many epochs at each validation (site_app.learning.personalize)."""
    personalize_lr_share: float
    """At this share of `learning_rate`, in (0, 1]."""
    min_lesion_mm3: float
    """Validation post-processing: smaller predicted tumor components are removed (site_app.learning.postprocess).
    The site's own (node config; at_site), never the run's: a simulated site's is `sim-min-lesion-mm3`."""
    sim_min_report_cases: int
    sim_min_position_cases: int
    sim_min_train_cases: int
    sim_validation_fraction: float
    sim_min_lesion_mm3: float
    """A simulated site's disclosure policy (site_app.disclosure.policy); a deployed one has its own in its node
    config, which the run config cannot change."""
    sim_share_local_model: str
    """The simulated sites (comma-separated names) consenting to share their local-only model for evaluation."""
    sim_local_dp_noise_multiplier: float
    sim_local_dp_clipping_norm: float
    """A simulated site's local DP (site_app.local_dp); a deployed one sets its own in its node config."""
    sim_data: Path | None
    sim_work: Path | None
    """Simulation only: the folder of site folders, and of their work folders (None when not set)."""

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> "SiteRunSettings":
        """Read and check every setting; a bad one raises a ValueError naming it."""
        preset = MODEL_PRESET.read(run_config)
        settings = cls(
            model_preset=preset,
            seed=SEED.read(run_config),
            local_epochs=LOCAL_EPOCHS.read(run_config),
            learning_rate=LEARNING_RATE.read(run_config),
            batch_size=BATCH_SIZE.read(run_config),
            eval_regions=EVAL_REGIONS.read(run_config),
            pipeline=PipelineSettings(
                spacing_mm=SPACING_MM.read(run_config),
                patch_size=patch_size(preset, PATCH_SIZE.read(run_config)),
                samples_per_case=SAMPLES_PER_CASE.read(run_config),
            ),
            local_norm=LOCAL_NORM.read(run_config),
            transport_dtype=TRANSPORT_DTYPE.read(run_config),
            local_baseline=LOCAL_BASELINE.read(run_config),
            personalize_epochs=PERSONALIZE_EPOCHS.read(run_config),
            personalize_lr_share=personalize_lr_share(run_config),
            min_lesion_mm3=SIM_MIN_LESION_MM3.read(run_config),
            sim_min_report_cases=SIM_MIN_REPORT_CASES.read(run_config),
            sim_min_position_cases=SIM_MIN_POSITION_CASES.read(run_config),
            sim_min_train_cases=SIM_MIN_TRAIN_CASES.read(run_config),
            sim_validation_fraction=SIM_VALIDATION_FRACTION.read(run_config),
            sim_min_lesion_mm3=SIM_MIN_LESION_MM3.read(run_config),
            sim_share_local_model=SIM_SHARE_LOCAL_MODEL.read(run_config),
            sim_local_dp_noise_multiplier=SIM_LOCAL_DP_NOISE_MULTIPLIER.read(run_config),
            sim_local_dp_clipping_norm=SIM_LOCAL_DP_CLIPPING_NORM.read(run_config),
            sim_data=_folder(SIM_DATA.read(run_config)),
            sim_work=_folder(SIM_WORK.read(run_config)),
        )
        evaluation_regions(settings.eval_regions)  # an unknown name fails here, before any work
        return settings

    def at_site(self, node_config: Mapping[str, object]) -> "SiteRunSettings":
        """These settings with the site's own post-processing: a deployed site's `min-lesion-mm3` from its node
        config (the run cannot sweep it), a simulated site's from `sim-min-lesion-mm3`."""
        from site_app.disclosure.policy import DisclosurePolicy  # the policy module imports this one's type

        return replace(self, min_lesion_mm3=DisclosurePolicy.for_site(node_config, self).min_lesion_mm3)

    @property
    def regions(self) -> Mapping[str, tuple[int, ...]]:
        """The evaluation regions: name -> label values."""
        return evaluation_regions(self.eval_regions)

    def as_run_config(self) -> dict[str, bool | int | float | str]:
        """These settings as run-config values (patch-size as used): what the site records of a validation."""
        return {
            MODEL_PRESET.key: self.model_preset,
            SEED.key: self.seed,
            LOCAL_EPOCHS.key: self.local_epochs,
            LEARNING_RATE.key: self.learning_rate,
            BATCH_SIZE.key: self.batch_size,
            EVAL_REGIONS.key: self.eval_regions,
            SPACING_MM.key: self.pipeline.spacing_mm,
            PATCH_SIZE.key: self.pipeline.patch_size,
            SAMPLES_PER_CASE.key: self.pipeline.samples_per_case,
            LOCAL_NORM.key: self.local_norm,
            TRANSPORT_DTYPE.key: self.transport_dtype,
            LOCAL_BASELINE.key: self.local_baseline,
            PERSONALIZE_EPOCHS.key: self.personalize_epochs,
            PERSONALIZE_LR_SHARE.key: self.personalize_lr_share,
            NodeConfig.MIN_LESION_MM3: self.min_lesion_mm3,
            SIM_MIN_REPORT_CASES.key: self.sim_min_report_cases,
            SIM_MIN_POSITION_CASES.key: self.sim_min_position_cases,
            SIM_MIN_TRAIN_CASES.key: self.sim_min_train_cases,
            SIM_VALIDATION_FRACTION.key: self.sim_validation_fraction,
            SIM_MIN_LESION_MM3.key: self.sim_min_lesion_mm3,
            SIM_SHARE_LOCAL_MODEL.key: self.sim_share_local_model,
            SIM_LOCAL_DP_NOISE_MULTIPLIER.key: self.sim_local_dp_noise_multiplier,
            SIM_LOCAL_DP_CLIPPING_NORM.key: self.sim_local_dp_clipping_norm,
            SIM_DATA.key: str(self.sim_data or ""),
            SIM_WORK.key: str(self.sim_work or ""),
        }


def _folder(value: str) -> Path | None:
    return Path(value).expanduser() if value.strip() else None


def personalize_lr_share(run_config: Mapping[str, object]) -> float:
    """`personalize-lr-share`, refused outside (0, 1]: a share above 1 would fine-tune faster than the site trains."""
    share = PERSONALIZE_LR_SHARE.read(run_config)
    if not 0 < share <= 1:
        raise PERSONALIZE_LR_SHARE.refuse(share, "a share in (0, 1]")
    return share
