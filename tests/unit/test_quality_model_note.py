"""bench/quality.py's entries name the model and grid their figures are of: `--model` changes them a lot."""

from pathlib import Path

import pytest

from site_app.settings.run_settings import SiteRunSettings

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def model_note(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from common import run_config
    from quality import model_note

    return lambda preset: model_note(
        SiteRunSettings.from_run_config(run_config(model_preset=preset, spacing_mm=4.0, patch_size=16))
    )


@pytest.mark.parametrize(
    ("preset", "shape"),
    [("tiny", "8-16-32, 2 halvings, 1 residual"), ("small", "16-32-64-128, 3 halvings, 2 residual")],
)
def test_the_note_names_the_model_its_shape_and_the_grid(model_note, preset, shape):
    note = model_note(preset)
    assert f"Model: `{preset}` (UNet channels {shape}" in note
    assert "every arm at 4 mm on 16³ patches" in note
