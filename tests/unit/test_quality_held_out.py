"""bench/held_out.py: the quality bench measures every model again on held-out cases of each site's own profile,
written and preprocessed apart from the sites' folders; a pooled figure weighs the sites by their own cases."""

import pytest
import torch

from models.presets import build_model
from models.weights import save_checkpoint, to_record
from site_app.settings.run_settings import SiteRunSettings


@pytest.fixture
def held_out(bench_module):
    return bench_module("held_out")


@pytest.fixture
def settings(bench_module) -> SiteRunSettings:
    """The tiny model on the bench's coarse grid."""
    config = bench_module("common").run_config(model_preset="tiny", patch_size=24, spacing_mm=3.0)
    return SiteRunSettings.from_run_config(config)


def test_each_site_is_measured_on_its_own_held_out_cases(held_out, settings, tmp_path):
    held = held_out.write_and_load(tmp_path, "tiny", 0, 1, {"hospital-a": 6, "hospital-b": 5}, settings)
    assert held.n_cases == 1
    assert [item["case_id"] for item in held.items["hospital-a"]] == ["hospital-a-007"]  # after its 6 own
    assert [item["case_id"] for item in held.items["hospital-b"]] == ["hospital-b-006"]
    assert not (tmp_path / "data").exists()  # the sites' own folders are elsewhere and untouched

    models = {site: build_model(settings.model_preset, seed=0) for site in held.items}
    results = held_out.evaluate_held_out(models, held, settings, torch.device("cpu"))
    assert {site: [c.case_id for c in cases] for site, cases in results.items()} == {
        "hospital-a": ["hospital-a-007"],
        "hospital-b": ["hospital-b-006"],
    }
    assert held.pooled({"hospital-a": 1.0, "hospital-b": 0.0}) == pytest.approx(6 / 11)


def test_a_site_model_is_read_from_where_the_site_kept_it(held_out, settings, tmp_path):
    model = build_model(settings.model_preset, seed=3)
    latest = tmp_path / "hospital-a" / "models" / "latest.pt"
    latest.parent.mkdir(parents=True)
    save_checkpoint(to_record(model), latest, {})
    relative = latest.relative_to(tmp_path / "hospital-a")
    [(site, kept)] = held_out.kept_models(tmp_path, ["hospital-a"], settings.model_preset, relative).items()
    assert site == "hospital-a"
    pairs = zip(kept.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
