"""Every run setting the coordinator reads, read once through models.run_config into one typed object.

The ServerApp reads the coordinator's settings and the shared ones; never a site's (models.run_config.Owner).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.presets import get_preset, patch_size
from models.run_config import (
    MIN_SITES,
    MODEL_PRESET,
    NUM_SERVER_ROUNDS,
    PATCH_SIZE,
    ROUND_TIMEOUT_S,
    RUN_DIR,
    SEED,
    SPACING_MM,
)


@dataclass(frozen=True)
class ServerRunSettings:
    num_rounds: int
    min_sites: int
    model_preset: str
    seed: int
    round_timeout_s: float
    run_dir: Path
    spacing_mm: float
    patch_size: int
    """The preprocessing the sites train with (patch-size as used: the preset's when the setting is 0); recorded
    in every checkpoint's meta (models.model_source.inference_meta)."""

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
        return cls(
            num_rounds=NUM_SERVER_ROUNDS.read(run_config),
            min_sites=MIN_SITES.read(run_config),
            model_preset=preset,
            seed=SEED.read(run_config),
            round_timeout_s=ROUND_TIMEOUT_S.read(run_config),
            run_dir=Path(run_dir).expanduser().resolve(),
            spacing_mm=SPACING_MM.read(run_config),
            patch_size=patch_size(preset, PATCH_SIZE.read(run_config)),
        )
