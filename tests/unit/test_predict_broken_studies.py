"""`oncofed site predict` over a folder holding one good study and five broken ones: the good one is written, each
broken one is listed with its own reason, and no file of the data folder changes. Runs as an ordinary user when
the tests run as root, so that the unreadable file really is unreadable."""

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from corpus_builder import phantom, write_dicom_case, write_nifti_case, write_non_image
from model_checkpoints import SOME_EDEMA, biased_checkpoint
from pydicom.uid import BasicTextSRStorage
from readonly_checks import tree_digest, unprivileged
from typer.testing import CliRunner

from oncofed_cli import app

runner = CliRunner()

BROKEN = {
    "truncated": "cannot decode the pixel data",
    "missing-slice": "missing slice(s)",
    "two-d": "2-D image",
    "unreadable": "permission denied",
}
"""Study -> what its reason must say (the non-image DICOM study shows up as a file that is not used)."""


def build(data: Path) -> None:
    write_dicom_case(data / "good", 0)
    case = write_dicom_case(data / "truncated", 1)
    case.slices[3].write_bytes(case.slices[3].read_bytes()[:-200])
    case = write_dicom_case(data / "missing-slice", 2)
    case.slices[6].unlink()
    truth = phantom(3, "LAS")
    write_nifti_case(data, "two-d", 3, image=truth.image.array[:, :, 0])
    write_nifti_case(data, "unreadable", 4)
    for label in (data / "labelsTr").iterdir():
        label.unlink()  # prediction needs no labels
    (data / "report").mkdir()
    write_non_image(data / "report" / "REPORT", BasicTextSRStorage, "SR", "1.2.3.4")
    for path in [data, *data.rglob("*")]:  # read-only for everyone, the unreadable image for no one
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(data / "imagesTr" / "unreadable.nii.gz", 0)


@pytest.fixture(scope="module")
def outcome():
    base = Path(tempfile.mkdtemp(prefix="oncofed-predict-"))
    try:
        os.chmod(base, 0o755)  # the unprivileged user must reach it
        data, out = base / "data", base / "out"
        build(data)
        model = biased_checkpoint(base / "model.pt", SOME_EDEMA)
        os.chmod(model, 0o644)
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)
        args = ["site", "predict", "--model", str(model), "--data", str(data), "--out"]
        runner.invoke(
            app, [*args, str(base / "warm-up")]
        )  # modules imported on first use, as the current user
        before = tree_digest(data)
        with unprivileged():
            result = runner.invoke(app, [*args, str(out)])
        after = tree_digest(data)
        report = json.loads((out / "predictions.json").read_text())
        yield {"result": result, "report": report, "before": before, "after": after, "out": out}
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(base)


def test_the_good_study_is_written(outcome):
    assert outcome["result"].exit_code == 0, outcome["result"].output
    studies = {s["case_id"]: s for s in outcome["report"]["studies"]}
    assert studies["good"]["status"] == "written" and studies["good"]["seg"]
    assert [s["case_id"] for s in outcome["report"]["studies"] if s["status"] == "written"] == ["good"]
    assert np.asarray(studies["good"]["shape"]).prod() > 0


def test_each_broken_study_is_listed_with_its_reason(outcome):
    studies = {s["case_id"]: s for s in outcome["report"]["studies"]}
    for case_id, reason in BROKEN.items():
        assert studies[case_id]["status"] != "written", studies[case_id]
        assert reason in studies[case_id]["reason"], (case_id, studies[case_id]["reason"])
    unused = {f["path"]: f["reason"] for f in outcome["report"]["files_not_used"]}
    assert "holds no image" in unused["report/REPORT"]
    assert set(studies) == {"good", *BROKEN}
    stderr = outcome["result"].stderr
    assert all(f"{case_id}: not predicted:" in stderr for case_id in BROKEN)


def test_no_file_of_the_data_folder_changed(outcome):
    assert outcome["after"] == outcome["before"]
    assert not any(p.name.startswith(".") for p in outcome["out"].rglob("*"))  # no temporary file left
