"""bench/quality.py's entries name the model and grid their figures are of: `--model` changes them a lot."""

import pytest

from site_app.settings.run_settings import SiteRunSettings


@pytest.fixture
def model_note(bench_module):
    run_config, note = bench_module("common").run_config, bench_module("quality").model_note
    return lambda preset: note(
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
