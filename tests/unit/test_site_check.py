"""`oncofed site check` on a corpus of malformed and unusual exports: a specific reason for each, the good cases
used, nothing written into the data folder (by the check or by a training round), exit codes OK, NO_USABLE_DATA,
BAD_INPUT."""

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from corpus_builder import SITE_TOML, build_corpus, write_dicom_case, write_nifti_case
from readonly_checks import tree_digest, unprivileged
from typer.testing import CliRunner

from data_prep.dataset import training_dataset
from data_prep.transforms import PipelineSettings
from models.presets import build_model
from models.shared.exit_codes import ExitCode
from oncofed_cli import app
from site_app.learning.site_data import load_site_cases
from site_app.learning.training import train_epochs
from site_app.settings.identity import SitePaths
from site_app.site_log import site_logger

SETTINGS = PipelineSettings(spacing_mm=4.0, patch_size=16, samples_per_case=1)
REQUIRED_KEYS = {
    "case_id",
    "status",
    "reason",
    "shape",
    "spacing_mm",
    "source_orientation",
    "label_volumes_ml",
}

SITE_CHECK = ["site", "check"]
runner = CliRunner()


def import_lazy_modules(data: Path, config: Path, scratch: Path) -> None:
    """Run the same code once as the current user first: modules imported on first use (codecs, torch's
    optimizer internals) may live where 'nobody' cannot read (here the interpreter sits in root's home)."""
    runner.invoke(app, [*SITE_CHECK, "--data", str(data), "--work", str(scratch), "--config", str(config)])
    batch = {"image": torch.randn(1, 16, 16, 16), "label": torch.zeros(1, 16, 16, 16, dtype=torch.long)}
    train_epochs(
        build_model("tiny", seed=0),
        [batch],
        epochs=1,
        learning_rate=1e-3,
        batch_size=1,
        device=torch.device("cpu"),
    )


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        read_only = mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        os.chmod(path, read_only | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))


@pytest.fixture(scope="module")
def corpus():
    """The corpus, made read-only; site check (json and text) and one training round run on it as an
    ordinary user; the hashes of every file before and after."""
    base = Path(tempfile.mkdtemp(prefix="oncofed-corpus-"))
    try:
        yield run_on_corpus(base)
    finally:  # also when building the corpus failed
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, 0o700)
        shutil.rmtree(base)


def run_on_corpus(base: Path) -> dict:
    os.chmod(base, 0o755)  # the unprivileged user must reach the corpus
    data, work, config = base / "export", base / "work", base / "site.toml"
    expected = build_corpus(data)
    config.write_text(SITE_TOML)
    work.mkdir()
    os.chmod(work, 0o777)
    make_read_only(data)
    before = tree_digest(data)
    args = [*SITE_CHECK, "--data", str(data), "--work", str(work), "--config", str(config)]
    import_lazy_modules(data, config, base / "warm-up")
    with unprivileged():
        as_json = runner.invoke(app, [*args, "--format", "json"])
        as_text = runner.invoke(app, args)
        site = SitePaths("corpus", data, work)
        cases = load_site_cases(site, SETTINGS, 0.25, site_logger(work))
        dataset = training_dataset(cases.train, SETTINGS, work / "cache", seed=0)
        loss = train_epochs(
            build_model("tiny", seed=0),
            dataset,
            epochs=1,
            learning_rate=1e-3,
            batch_size=2,
            device=torch.device("cpu"),
        )
    return {
        "expected": expected,
        "json": as_json,
        "text": as_text,
        "cases": cases,
        "loss": loss,
        "work": work,
        "before": before,
        "after": tree_digest(data),
    }


def test_each_excluded_case_names_its_file_and_no_used_file_is_reported_unused(corpus):
    """What the operator reads: an excluded case's reason names the file or folder at fault, and the files
    reported unused are exactly the corpus' stray files (a file of a usable case is never among them).
    (This replaces a count of the corpus' own entries, which tested corpus_builder, not the product.)"""
    inventory = json.loads(corpus["json"].stdout)
    excluded = [c for c in inventory["cases"] if c["status"] == "excluded"]
    assert excluded and all(c["case_id"] in c["reason"] for c in excluded), excluded
    reported_unused = {f["path"] for f in inventory["ignored_files"]}
    assert reported_unused == {e.path for e in corpus["expected"] if e.status == "ignored"}


def test_each_corpus_input_gets_its_specific_reason(corpus):
    result = corpus["json"]
    assert result.exit_code == 0, result.output
    inventory = json.loads(result.stdout)
    cases = {c["case_id"]: c for c in inventory["cases"]}
    ignored = {f["path"]: f["reason"] for f in inventory["ignored_files"]}
    for entry in corpus["expected"]:
        if entry.status == "ignored":
            assert entry.reason in ignored.get(entry.path, ""), (entry, ignored.get(entry.path))
            continue
        case = cases[entry.case_id]
        assert case["status"] == entry.status, (entry, case["reason"])
        if entry.status == "excluded":
            assert entry.reason in case["reason"], (entry.kind, case["reason"])
        else:
            assert case["reason"] is None and (not entry.reason or entry.reason in " ".join(case["problems"]))
    described = {e.case_id for e in corpus["expected"] if e.case_id}
    assert set(cases) == described  # nothing found that the corpus does not explain


def test_inventory_schema_and_summary(corpus):
    inventory = json.loads(corpus["json"].stdout)
    assert json.loads((corpus["work"] / "inventory.json").read_text()) == inventory
    usable = [c for c in inventory["cases"] if c["status"] == "usable"]
    for case in inventory["cases"]:
        assert REQUIRED_KEYS <= set(case)
    for case in usable:
        assert case["spacing_mm"] == ([2.0, 2.0, 4.0] if case["case_id"] == "jpeg2000" else [4.0, 4.0, 4.0])
        assert len(case["shape"]) == 3 and min(case["shape"]) >= 16
        assert case["label_volumes_ml"] and all(v > 0 for v in case["label_volumes_ml"].values())
    assert {c["source_orientation"] for c in usable} == {"LAS", "LPS"}
    assert inventory["summary"]["n_usable"] == len(usable)
    assert inventory["summary"]["n_excluded"] == len(inventory["cases"]) - len(usable)
    assert "PatientID" not in json.dumps(inventory) and "1.2.826.0.1" not in json.dumps(inventory)  # no UIDs


def test_text_report_lists_cases_reasons_and_unused_files(corpus):
    result = corpus["text"]
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Excluded cases:" in out and "Files not used:" in out
    assert (
        "  missing-slice: missing-slice: missing slice(s)" in out and "reports/PLAN: RT Plan Storage" in out
    )
    assert "good-dicom" in out and "usable" in out


def test_the_data_folder_is_unchanged_by_site_check_and_a_training_round(corpus):
    assert corpus["after"] == corpus["before"]
    assert corpus["loss"] > 0
    used = {item["case_id"] for item in corpus["cases"].train + corpus["cases"].val}
    inventory = json.loads(corpus["json"].stdout)
    assert used == {c["case_id"] for c in inventory["cases"] if c["status"] == "usable"}


def invoke(*args: str):
    return runner.invoke(app, [*SITE_CHECK, *args])


def test_no_usable_case_is_no_usable_data(tmp_path):
    write_dicom_case(tmp_path / "data" / "patient-1", 0, with_seg=False)
    result = invoke("--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"))
    assert result.exit_code == ExitCode.NO_USABLE_DATA, result.output
    assert "patient-1: patient-1: no label" in result.stdout
    assert (tmp_path / "work" / "inventory.json").is_file()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d, w: d.rmdir(), "does not exist"),
        (
            lambda d, w: (w.parent / "site.toml").write_text("[series]\nmodality = ['CT']\n"),
            "unknown key(s) modality in [series]; valid keys: modalities, description",
        ),
        (
            lambda d, w: (w.parent / "site.toml").write_text('[labels]\nseg-segments = { "1" = 5 }\n'),
            "labels.seg-segments.1 must be a label value 1-3",
        ),
        (
            lambda d, w: (w.parent / "cases.csv").write_text("id,image\nc1,a.nii.gz\n"),
            "missing column(s) case_id, label",
        ),
    ],
)
def test_bad_inputs_are_bad_input_with_one_line(tmp_path, setup, message):
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    setup(data, work)
    args = ["--data", str(data), "--work", str(work)]
    if (tmp_path / "site.toml").exists():
        args += ["--config", str(tmp_path / "site.toml")]
    if (tmp_path / "cases.csv").exists():
        args += ["--manifest", str(tmp_path / "cases.csv")]
    result = invoke(*args)
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_work_folder_inside_the_data_folder_is_refused(tmp_path):
    write_nifti_case(tmp_path, "c1", 0)
    result = invoke("--data", str(tmp_path), "--work", str(tmp_path / "work"))
    assert result.exit_code == ExitCode.BAD_INPUT and "lies inside the data folder" in result.stderr
    assert not (tmp_path / "work").exists()


def test_manifest_lists_cases_in_an_unorganised_folder(tmp_path):
    data = tmp_path / "data"
    write_nifti_case(data / "misc", "scan-a", 0)
    dicom = write_dicom_case(data / "pacs" / "x17", 1)
    (tmp_path / "cases.csv").write_text(
        "case_id,image,label\n"
        "a,misc/imagesTr/scan-a.nii.gz,misc/labelsTr/scan-a.nii.gz\n"
        f"b,pacs/x17,pacs/x17/{dicom.seg.name}\n"
        "c,../outside.nii.gz,misc/labelsTr/scan-a.nii.gz\n"
        f"d,misc/imagesTr/scan-a.nii.gz,pacs/x17/{dicom.slices[0].name}\n"
        "a,misc/imagesTr/scan-a.nii.gz,misc/labelsTr/scan-a.nii.gz\n"
    )
    result = invoke(
        "--data",
        str(data),
        "--work",
        str(tmp_path / "work"),
        "--manifest",
        str(tmp_path / "cases.csv"),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    cases = {c["case_id"]: c for c in json.loads(result.stdout)["cases"]}
    assert cases["a"]["status"] == "usable" and cases["a"]["source_orientation"] == "LAS"
    assert (
        cases["b"]["status"] == "usable"
        and cases["b"]["modality"] == "CT"
        and cases["b"]["image"] == "pacs/x17"
    )
    assert "must be relative to the data folder and stay inside it" in cases["c"]["reason"]
    assert "the label is a DICOM CT, not a DICOM-SEG or RTSTRUCT" in cases["d"]["reason"]
    assert "line 6: case id 'a' is already used on line 2" in cases["a (line 6)"]["reason"]
    assert len(cases) == 5
