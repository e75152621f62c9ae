"""`oncofed export`: a MONAI bundle holding the network definition, input/output spec, label names, the training
summary, the weights and a TorchScript model giving the checkpoint's logits; site predict accepts it as a model.
(Running its inference config in a fresh process: tests/integration/test_predict_synthetic_sites.py.)"""

import dataclasses
import json

import pytest
import torch
from model_checkpoints import SOME_EDEMA, biased_checkpoint
from monai.bundle import ConfigParser
from run_folder_builder import REPORTING_SITE, SUPPRESSED_SITE, fake_run
from typer.testing import CliRunner

from data_prep.transforms import PipelineSettings
from models.model_source import load_model_source
from models.presets import build_model, network_arguments
from models.shared.labels import LABEL_NAMES
from oncofed_cli import app
from site_app.tools.bundle_export import inference_config

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run_dir = fake_run(tmp_path_factory.mktemp("run") / "run")
    bundle = run_dir.parent / "bundle"
    result = runner.invoke(
        app, ["export", "--model", str(run_dir / "models" / "final.pt"), "--out", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    return run_dir, bundle


def test_the_bundle_holds_configs_weights_and_torchscript(exported):
    _, bundle = exported
    for path in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.ts"):
        assert (bundle / path).is_file(), path
    assert not list(bundle.parent.glob(".bundle*"))  # the staging folder is gone


def test_metadata_describes_network_io_labels_and_training(exported):
    run_dir, bundle = exported
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_def"] == {"_target_": "monai.networks.nets.UNet", **network_arguments("tiny")}
    inputs, outputs = metadata["network_data_format"]["inputs"], metadata["network_data_format"]["outputs"]
    assert inputs["image"]["num_channels"] == 1 and inputs["image"]["spatial_shape"] == [16, 16, 16]
    assert outputs["pred"]["channel_def"] == {str(k): v for k, v in LABEL_NAMES.items()}
    assert "not for diagnosis" in metadata["description"]
    own = metadata["oncofed"]
    assert own["spacing_mm"] == 4.0 and own["patch_size"] == 16 and own["model_preset"] == "tiny"
    training = own["training"]
    assert training["run"] == run_dir.name and set(training["sites"]) == {REPORTING_SITE, SUPPRESSED_SITE}
    assert training["sites"][SUPPRESSED_SITE]["status"] == "suppressed"
    assert training["settings"]["model-preset"] == "tiny"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_the_bundle_is_the_same_model_as_the_checkpoint(exported):
    run_dir, bundle = exported
    checkpoint, from_bundle = load_model_source(run_dir / "models" / "final.pt"), load_model_source(bundle)
    assert from_bundle.kind == "bundle" and from_bundle.sha256 == checkpoint.sha256
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["oncofed"]["model_sha256"] == checkpoint.sha256
    image = torch.randn(1, 1, 32, 24, 16, generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    with torch.no_grad():
        expected = checkpoint.build()(image)
        torch.testing.assert_close(scripted(image), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(from_bundle.build()(image), expected, rtol=0, atol=0)


def test_the_inference_config_builds_the_same_network(exported):
    _, bundle = exported
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    assert type(network) is type(build_model("tiny"))
    assert network.state_dict().keys() == build_model("tiny").state_dict().keys()


def test_an_existing_folder_is_not_overwritten(tmp_path):
    model = biased_checkpoint(tmp_path / "model.pt", SOME_EDEMA)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", "--model", str(model), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 3 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_the_bundle_config_holds_every_preprocessing_setting_of_the_sites():
    """Each PreprocessSettings field reaches the exported steps as a value (not the bundle's own default)."""
    settings = dataclasses.replace(
        PipelineSettings(spacing_mm=4.0, patch_size=16, samples_per_case=1).preprocessing,
        orientation="LPS",
        image_interpolation="nearest",
        head_fraction=0.2,
        head_quantiles=(0.02, 0.98),
        head_quantile_samples=1000,
        head_smoothing_voxels=2.0,
        crop_margin_voxels=3,
        crop_allow_smaller=False,
        pad_mode="edge",
        image_dtype="float64",
    )
    steps = inference_config("tiny", settings)["preprocessing"]["transforms"][2:]
    by_name = {step["_target_"].rsplit(".", 1)[-1]: step for step in steps}
    head = {"fraction": 0.2, "quantiles": [0.02, 0.98], "samples": 1000, "smoothing": 2.0}
    assert by_name["Orientationd"]["axcodes"] == "LPS"
    assert by_name["Spacingd"]["pixdim"] == [4.0] * 3 and by_name["Spacingd"]["mode"] == ["nearest"]
    crop = by_name["CropForegroundd"]
    assert crop["margin"] == 3 and crop["allow_smaller"] is False
    assert crop["select_fn"]["_target_"].endswith(".head_mask") and crop["select_fn"]["_mode_"] == "callable"
    assert {k: crop["select_fn"][k] for k in head} == head
    assert {k: by_name["ZScoreOverHeadd"][k] for k in head} == head
    assert by_name["SpatialPadd"]["spatial_size"] == [16] * 3 and by_name["SpatialPadd"]["mode"] == "edge"
    assert by_name["EnsureTyped"]["dtype"] == "$torch.float64"
