"""The run-wide settings the coordinator needs, read once from `[tool.flwr.app.config]`; quorum, deadlines and
resume are in models.federation_settings."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerRunSettings:
    num_rounds: int
    model_preset: str
    seed: int
    run_dir: Path

    @classmethod
    def from_run_config(cls, run_config: dict) -> "ServerRunSettings":
        run_dir = str(run_config.get("run-dir", ""))
        if not run_dir:
            raise ValueError("run config `run-dir` is empty: set it to the folder the run's results go to")
        return cls(
            num_rounds=int(run_config["num-server-rounds"]),
            model_preset=str(run_config["model-preset"]),
            seed=int(run_config["seed"]),
            run_dir=Path(run_dir).expanduser().resolve(),
        )
