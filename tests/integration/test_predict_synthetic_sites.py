"""`oncofed site predict` and `oncofed export` on a tiny synthetic federation (`oncofed synth --preset tiny`):
hospital-a exports NIfTI, hospital-b DICOM CT series. Every DICOM study gets a DICOM-SEG that dciodvfy accepts,
highdicom reads, that references only its source series and whose frames lie on the source slices, and that the
project's own reader turns into exactly the NIfTI label map written for the study. The exported bundle, run by
MONAI from its inference config in a fresh process, gives the labels `site predict` gives."""

import json
import shutil
import subprocess
import sys
import textwrap

import highdicom as hd
import numpy as np
import pydicom
import pytest
from model_checkpoints import SOME_EDEMA, biased_checkpoint
from readonly_checks import tree_digest
from typer.testing import CliRunner

from data_prep.dicom.seg_reader import read_dicom_seg
from data_prep.dicom.series import read_dicom_series
from data_prep.discovery import discover
from data_prep.nifti import read_nifti
from data_prep.synth.federation import write_federation
from oncofed_cli import app

runner = CliRunner()
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("federation")
    write_federation(root / "data", n_sites=2, seed=0, preset="tiny")
    model = biased_checkpoint(root / "model.pt", SOME_EDEMA)
    before = tree_digest(root / "data")
    outputs = {}
    for site in ("hospital-a", "hospital-b"):
        out = root / "predictions" / site
        result = runner.invoke(
            app,
            [
                "site",
                "predict",
                "--model",
                str(model),
                "--data",
                str(root / "data" / site),
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        outputs[site] = json.loads((out / "predictions.json").read_text())
    return {"root": root, "model": model, "outputs": outputs, "before": before}


def studies(federation, site: str) -> dict[str, dict]:
    return {s["case_id"]: s for s in federation["outputs"][site]["studies"]}


def test_one_label_map_per_study_and_one_seg_per_dicom_study(federation):
    for site in ("hospital-a", "hospital-b"):
        cases = discover(federation["root"] / "data" / site).cases
        written = studies(federation, site)
        assert set(written) == {c.case_id for c in cases} and all(
            s["status"] == "written" for s in written.values()
        )
        out = federation["root"] / "predictions" / site
        assert sorted(p.name for p in (out / "nifti").iterdir()) == sorted(f"{c}.nii.gz" for c in written)
        if site == "hospital-b":
            assert sorted(p.name for p in (out / "dicom-seg").iterdir()) == sorted(
                f"{c}.dcm" for c in written
            )
        else:
            assert not (out / "dicom-seg").exists()
    assert tree_digest(federation["root"] / "data") == federation["before"]


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_every_seg_passes_dciodvfy_without_errors(federation):
    out = federation["root"] / "predictions" / "hospital-b"
    for study in studies(federation, "hospital-b").values():
        checked = subprocess.run(
            [DCIODVFY, str(out / study["seg"])], check=False, capture_output=True, text=True, timeout=120
        )
        report = checked.stdout + checked.stderr
        assert "Segmentation" in report, report  # dciodvfy recognised the IOD it checked
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{study['seg']}:\n" + "\n".join(errors)


def test_each_seg_references_its_series_and_reads_back_as_the_label_map(federation):
    data, out = federation["root"] / "data" / "hospital-b", federation["root"] / "predictions" / "hospital-b"
    cases = {c.case_id: c for c in discover(data).cases}
    for case_id, study in studies(federation, "hospital-b").items():
        series = read_dicom_series(cases[case_id].image)
        sources = {
            str(ds.SOPInstanceUID): ds
            for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in cases[case_id].image)
        }
        seg = hd.seg.segread(out / study["seg"])
        assert {series_uid for _, series_uid, _ in seg.get_source_image_uids()} == {
            series.series_instance_uid
        }
        assert {sop for _, _, sop in seg.get_source_image_uids()} <= set(sources)
        for frame in seg.PerFrameFunctionalGroupsSequence:
            source = sources[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
            np.testing.assert_allclose(
                np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float),
                np.array(source.ImagePositionPatient, dtype=float),
                atol=1e-3,
            )
        label = read_nifti(out / study["nifti"])
        mapping = {int(number): value for number, value in study["seg_segments"].items()}
        np.testing.assert_array_equal(read_dicom_seg(out / study["seg"], series, mapping).array, label.array)
        assert label.array.shape == series.volume.array.shape
        np.testing.assert_allclose(label.affine, series.volume.affine, atol=1e-4)  # NIfTI holds float32
        assert seg.SeriesInstanceUID not in {series.series_instance_uid}


def test_nifti_label_maps_have_the_source_images_affine(federation):
    data, out = federation["root"] / "data" / "hospital-a", federation["root"] / "predictions" / "hospital-a"
    for case_id, study in studies(federation, "hospital-a").items():
        image, label = read_nifti(data / "imagesTr" / f"{case_id}.nii.gz"), read_nifti(out / study["nifti"])
        assert label.array.shape == image.array.shape
        np.testing.assert_array_equal(label.affine, image.affine)


BUNDLE_RUN = textwrap.dedent(
    """
    import sys
    from monai.bundle import ConfigParser

    bundle, images, out = sys.argv[1:]
    parser = ConfigParser()
    parser.read_config(f"{bundle}/configs/inference.json")
    parser.update({"bundle_root": bundle, "dataset_dir": images, "output_dir": out})
    parser.get_parsed_content("run")  # the bundle's own inference: load weights, predict, save each label map
    """
)


def test_the_exported_bundle_run_by_monai_gives_the_labels_site_predict_gives(federation):
    root = federation["root"]
    bundle, out = root / "bundle", root / "bundle-out"
    result = runner.invoke(app, ["export", "--model", str(federation["model"]), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    images = root / "data" / "hospital-a" / "imagesTr"
    ran = subprocess.run(
        [sys.executable, "-c", BUNDLE_RUN, str(bundle), str(images), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    predicted = studies(federation, "hospital-a")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}_seg.nii.gz" for c in predicted)
    for case_id, study in predicted.items():
        from_bundle = read_nifti(out / f"{case_id}_seg.nii.gz")
        from_site = read_nifti(root / "predictions" / "hospital-a" / study["nifti"])
        np.testing.assert_array_equal(from_bundle.array, from_site.array)
        np.testing.assert_allclose(from_bundle.affine, from_site.affine, atol=1e-4)
