"""Every run setting the coordinator reads, read once through models.run_config into one typed object.

The ServerApp reads the coordinator's settings and the shared ones; never a site's (models.run_config.Owner).
Beyond each setting's own type and range, the settings are checked together here: the quorum cannot exceed the
federation's sites, and a run either resumes or starts from a saved model, never both.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.presets import get_preset, patch_size
from models.run_config import (
    DESCRIBE_TIMEOUT_S,
    EVALUATE_TIMEOUT_S,
    EXPECTED_SITES,
    INIT_MODEL,
    MIN_SITES,
    MODEL_PRESET,
    NUM_SERVER_ROUNDS,
    PATCH_SIZE,
    RESUME,
    RUN_DIR,
    SEED,
    SPACING_MM,
    TRAIN_TIMEOUT_S,
    WAIT_FOR_SITES_S,
)


@dataclass(frozen=True)
class ServerRunSettings:
    num_rounds: int
    model_preset: str
    seed: int
    run_dir: Path
    spacing_mm: float
    patch_size: int
    """The preprocessing the sites train with (patch-size as used: the preset's when the setting is 0); recorded
    in every checkpoint's meta (models.model_source.inference_meta)."""
    min_sites: int
    """The quorum: sites online to start a round, sound training replies to change the global model."""
    wait_for_sites_s: float
    describe_timeout_s: float
    train_timeout_s: float
    evaluate_timeout_s: float
    expected_sites: tuple[str, ...]
    resume: bool
    init_model: Path | None

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> "ServerRunSettings":
        """Read and check every setting; a bad one raises a ValueError naming it."""
        run_dir = RUN_DIR.read(run_config)
        if not run_dir.strip():
            raise ValueError(
                f"run config `{RUN_DIR.key}` is empty: set it to the folder the run's results go to"
            )
        preset = MODEL_PRESET.read(run_config)
        get_preset(preset)  # an unknown preset fails here, before the run folder is made
        init_model = INIT_MODEL.read(run_config).strip()
        settings = cls(
            num_rounds=NUM_SERVER_ROUNDS.read(run_config),
            model_preset=preset,
            seed=SEED.read(run_config),
            run_dir=Path(run_dir).expanduser().resolve(),
            spacing_mm=SPACING_MM.read(run_config),
            patch_size=patch_size(preset, PATCH_SIZE.read(run_config)),
            min_sites=MIN_SITES.read(run_config),
            wait_for_sites_s=WAIT_FOR_SITES_S.read(run_config),
            describe_timeout_s=DESCRIBE_TIMEOUT_S.read(run_config),
            train_timeout_s=TRAIN_TIMEOUT_S.read(run_config),
            evaluate_timeout_s=EVALUATE_TIMEOUT_S.read(run_config),
            expected_sites=tuple(s.strip() for s in EXPECTED_SITES.read(run_config).split(",") if s.strip()),
            resume=RESUME.read(run_config),
            init_model=Path(init_model).expanduser() if init_model else None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """The checks across settings; ValueError names the setting and the fix."""
        sites = self.expected_sites
        if len(set(sites)) != len(sites):
            raise ValueError(f"run config `{EXPECTED_SITES.key}` names a site twice: {', '.join(sites)}")
        if sites and self.min_sites > len(sites):
            raise ValueError(
                f"run config `{MIN_SITES.key}` is {self.min_sites} but the federation has only {len(sites)} "
                f"sites ({', '.join(sites)}); lower {MIN_SITES.key}"
            )
        if self.resume and self.init_model is not None:
            raise ValueError(
                f"run config sets both `{RESUME.key}` and `{INIT_MODEL.key}`: a run either continues or starts"
                f" from a saved model; drop one of them"
            )
