"""The run-wide settings a site needs, read once from `[tool.flwr.app.config]` (kebab-case keys)."""

from dataclasses import dataclass

from data_prep.transforms import PipelineSettings


@dataclass(frozen=True)
class SiteRunSettings:
    model_preset: str
    local_epochs: int
    learning_rate: float
    batch_size: int
    val_fraction: float
    seed: int
    pipeline: PipelineSettings

    @classmethod
    def from_run_config(cls, run_config: dict) -> "SiteRunSettings":
        return cls(
            model_preset=str(run_config["model-preset"]),
            local_epochs=int(run_config["local-epochs"]),
            learning_rate=float(run_config["learning-rate"]),
            batch_size=int(run_config["batch-size"]),
            val_fraction=float(run_config["val-fraction"]),
            seed=int(run_config["seed"]),
            pipeline=PipelineSettings(
                spacing_mm=float(run_config["spacing-mm"]),
                patch_size=int(run_config["patch-size"]),
                samples_per_case=int(run_config["samples-per-case"]),
            ),
        )
