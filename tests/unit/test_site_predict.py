"""`oncofed site predict` on a small site holding one DICOM study and one unlabelled NIfTI study: a label map per
study on its stored grid, a DICOM-SEG for the DICOM study that reads back as that label map, predictions.json,
and a data folder left as it was."""

import json
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from corpus_builder import write_dicom_case, write_nifti_case
from model_checkpoints import BACKGROUND_ONLY, SOME_EDEMA, biased_checkpoint
from pydicom.sr.codedict import codes
from readonly_checks import tree_digest
from typer.testing import CliRunner

from data_prep.dicom.seg_reader import read_dicom_seg
from data_prep.dicom.series import read_dicom_series
from data_prep.nifti import read_nifti
from models.model_hash import weights_sha256
from models.shared.labels import LABEL_NAMES
from models.weights import load_checkpoint
from oncofed_cli import app

runner = CliRunner()


def predict(model: Path, data: Path, out: Path, *extra: str):
    return runner.invoke(
        app, ["site", "predict", "--model", str(model), "--data", str(data), "--out", str(out), *extra]
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("predict")
    data = root / "data"
    dicom = write_dicom_case(data / "patient-1", 0)
    write_nifti_case(data, "scan-2", 1, orientation="PSR")  # axes permuted: written back onto that grid too
    (data / "labelsTr" / "scan-2.nii.gz").unlink()  # prediction needs no label
    model = biased_checkpoint(root / "model.pt", SOME_EDEMA)
    return SimpleNamespace(root=root, data=data, dicom=dicom, model=model)


@pytest.fixture(scope="module")
def predicted(site) -> SimpleNamespace:
    model = site.model
    before = tree_digest(site.data)
    out = site.root / "out"
    result = predict(model, site.data, out)
    report = json.loads((out / "predictions.json").read_text())
    return SimpleNamespace(
        result=result,
        out=out,
        model=model,
        report=report,
        studies={s["case_id"]: s for s in report["studies"]},
        before=before,
        after=tree_digest(site.data),
    )


def test_every_study_gets_a_label_map_with_its_images_shape_and_affine(site, predicted):
    assert predicted.result.exit_code == 0, predicted.result.output
    assert set(predicted.studies) == {"patient-1", "scan-2"}
    assert all(s["status"] == "written" for s in predicted.studies.values())
    series = read_dicom_series(site.dicom.slices)
    sources = {"patient-1": series.volume, "scan-2": read_nifti(site.data / "imagesTr" / "scan-2.nii.gz")}
    for case_id, image in sources.items():
        study = predicted.studies[case_id]
        label = read_nifti(predicted.out / study["nifti"])
        assert label.array.shape == image.array.shape == tuple(study["shape"])
        if case_id == "scan-2":
            np.testing.assert_array_equal(label.affine, image.affine)  # NIfTI to NIfTI: bit for bit
        else:
            np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)  # NIfTI stores float32
        values = np.unique(label.array)
        assert set(values.tolist()) <= set(LABEL_NAMES) and values.max() > 0
        voxel_ml = np.prod(image.spacing_mm) / 1000
        for value, ml in study["volumes_ml"].items():
            assert ml == pytest.approx(np.sum(label.array == int(value)) * voxel_ml, abs=1e-3)
    assert predicted.report["model"]["sha256"] == weights_sha256(load_checkpoint(predicted.model)[0])
    assert predicted.studies["scan-2"]["seg"] is None  # a NIfTI study has no DICOM series to reference


def test_the_dicom_study_gets_a_seg_that_reads_back_as_its_label_map(site, predicted):
    study = predicted.studies["patient-1"]
    seg_path = predicted.out / study["seg"]
    seg = hd.seg.segread(seg_path)
    series = read_dicom_series(site.dicom.slices)
    sources = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, site.dicom.slices)}
    label = read_nifti(predicted.out / study["nifti"]).array.astype(np.uint8)

    mapping = {int(number): value for number, value in study["seg_segments"].items()}
    np.testing.assert_array_equal(read_dicom_seg(seg_path, series, mapping).array, label)
    assert sorted(mapping.values()) == sorted(set(np.unique(label).tolist()) - {0})  # one segment per label
    assert sorted(mapping) == list(range(1, len(mapping) + 1))

    referenced = {sop for _, _, sop in seg.get_source_image_uids()}
    assert referenced and referenced <= set(sources)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(
            [float(v) for v in position], [float(v) for v in sources[source].ImagePositionPatient], atol=1e-3
        )
    assert seg.SeriesInstanceUID == study["seg_series_instance_uid"]
    assert seg.SeriesInstanceUID != site.dicom.datasets[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == site.dicom.datasets[0].StudyInstanceUID
    assert "research use, not for diagnosis" in seg.SeriesDescription
    for item in seg.SegmentSequence:
        value = mapping[int(item.SegmentNumber)]
        assert item.SegmentLabel == LABEL_NAMES[value]
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName.startswith("OncoFed") and "oncofed" in algorithm.AlgorithmVersion
        assert predicted.report["model"]["sha256"] in algorithm.AlgorithmParameters
    codes_by_label = {1: codes.SCT.Necrosis, 2: codes.SCT.Edema, 3: codes.SCT.Neoplasm}
    for item in seg.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert code.CodeValue == codes_by_label[mapping[int(item.SegmentNumber)]].value


def test_the_data_folder_is_only_read(predicted):
    assert predicted.after == predicted.before


def test_an_empty_prediction_writes_its_label_map_and_says_why_there_is_no_seg(site):
    model = biased_checkpoint(site.root / "background.pt", BACKGROUND_ONLY)
    out = site.root / "empty"
    result = predict(model, site.data, out)
    assert result.exit_code == 0, result.output
    study = {s["case_id"]: s for s in json.loads((out / "predictions.json").read_text())["studies"]}[
        "patient-1"
    ]
    assert study["status"] == "written" and study["seg"] is None
    assert "no tumor voxel predicted" in study["seg_note"] and "at least one segment" in study["seg_note"]
    assert not read_nifti(out / study["nifti"]).array.any()
    assert not (out / "dicom-seg").exists()


def test_no_study_to_predict_exits_4(site, tmp_path):
    (tmp_path / "empty").mkdir()
    result = predict(site.root / "model.pt", tmp_path / "empty", tmp_path / "out")
    assert result.exit_code == 4, result.output
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["summary"]["n_written"] == 0


@pytest.mark.parametrize(
    ("model", "out", "message"),
    [
        ("missing.pt", "out", "missing.pt does not exist"),
        ("not-a-model.pt", "out", "is not an OncoFed checkpoint"),
        ("model.pt", "data/out", "lies inside the data folder"),
    ],
)
def test_bad_input_exits_3_with_one_line(site, model, out, message):
    (site.root / "not-a-model.pt").write_text("hello")
    result = predict(site.root / model, site.data, site.root / out)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (site.data / "out").exists()


def test_a_manifest_may_list_studies_without_a_label(site, tmp_path):
    manifest = tmp_path / "studies.csv"
    manifest.write_text("case_id,image\nct-study,patient-1\nmr-study,imagesTr/scan-2.nii.gz\nlost,nowhere\n")
    out = tmp_path / "out"
    result = predict(site.model, site.data, out, "--manifest", str(manifest))
    assert result.exit_code == 0, result.output
    studies = {s["case_id"]: s for s in json.loads((out / "predictions.json").read_text())["studies"]}
    assert studies["ct-study"]["status"] == studies["mr-study"]["status"] == "written"
    assert studies["ct-study"]["seg"] == "dicom-seg/ct-study.dcm"
    assert studies["lost"]["status"] == "excluded" and "nowhere does not exist" in studies["lost"]["reason"]
