"""Each site's held-out test cases: more cases of its own profile that no arm trains or validates on.

A consortium site validates on the 20 % of its own cases it holds out, so a small site's per-site figure is one to
three cases' Dice. The quality bench measures every model again on held-out cases of every site
(data_prep.synth.federation.write_held_out: the same scanner, format and tumour distribution as the site's own
cases, none of them), in a folder no site reads. The sites still train and validate on exactly their own cases;
only the measurement gets more cases. A pooled held-out figure weighs each site by its own case count, its share
of the consortium's cases, as the pooled validation figure (weighted by validation cases) roughly does.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from data_prep.dataset import usable_items
from data_prep.discovery import discover
from data_prep.ingest_settings import IngestSettings
from data_prep.inventory import build_inventory
from data_prep.synth.federation import write_held_out
from models.presets import build_model
from models.shared.labels import REGIONS
from models.weights import load_checkpoint
from site_app.learning.validation import CaseEvaluation, validate_cases
from site_app.settings.run_settings import SiteRunSettings
from site_app.site_log import site_logger


@dataclass(frozen=True)
class HeldOut:
    """Site name → its held-out cases as dataset items (data_prep.transforms.case_item), preprocessed on the run's
    grid; site name → its own case count (training + validation), its weight in a pooled figure."""

    items: dict[str, list[dict[str, object]]]
    weights: dict[str, int]
    work: Path
    """Where their preprocessing cache and log are."""

    @property
    def n_cases(self) -> int:
        """Held-out cases per site."""
        return min(len(items) for items in self.items.values())

    def pooled(self, per_site: Mapping[str, float]) -> float:
        """The sites' figures weighted by their own case counts."""
        total = sum(self.weights[site] for site in per_site)
        return sum(value * self.weights[site] for site, value in per_site.items()) / total


def write_and_load(
    out: Path,
    preset: str,
    data_seed: int,
    n_cases: int,
    weights: Mapping[str, int],
    settings: SiteRunSettings,
) -> HeldOut:
    """Write `n_cases` held-out cases of each of `weights`' sites under out/held-out (data) and preprocess them under
    out/held-out-work; a case that does not preprocess stops the bench (the benchmark's own data must)."""
    data, work = out / "held-out", out / "held-out-work"
    write_held_out(data, len(weights), data_seed, preset, n_cases)
    items = {}
    for site in weights:
        folder = data / site
        inventory = build_inventory(discover(folder), folder, IngestSettings())
        cache = work / site / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        usable, skipped = usable_items(inventory.usable_cases(), settings.pipeline, cache, inventory.settings)
        if skipped or len(usable) != n_cases:
            raise RuntimeError(f"held-out cases of {site} in {folder} did not all preprocess: {skipped}")
        items[site] = usable
    return HeldOut(items=items, weights=dict(weights), work=work)


def evaluate_held_out(
    models: Mapping[str, torch.nn.Module], held: HeldOut, settings: SiteRunSettings, device: torch.device
) -> dict[str, list[CaseEvaluation]]:
    """Site name → per-case results of `models[site]` (the model that site would use) on its held-out cases."""
    results = {}
    for site, model in models.items():
        cases, failed = validate_cases(
            model, held.items[site], settings.pipeline, REGIONS, device, site_logger(held.work / site)
        )
        if failed:
            raise RuntimeError(f"{failed} held-out case(s) of {site} failed; see {held.work / site}")
        results[site] = cases
    return results


def kept_models(work: Path, sites: Sequence[str], preset: str, latest: Path) -> dict[str, torch.nn.Module]:
    """Site name → the model it kept after the last run in its work folder at `latest` (relative to the work
    folder: the global model it validated, with its own norm layers under local-norm, or its personalized model)."""
    models = {}
    for site in sites:
        model = build_model(preset)
        model.load_state_dict(load_checkpoint(work / site / latest)[0])
        models[site] = model
    return models
