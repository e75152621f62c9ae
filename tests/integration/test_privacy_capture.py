"""Privacy of a real run: every Message each site sends (captured at its ClientApp), and every file the
coordinator keeps, hold no case id, file name, DICOM identifier or per-case value; a site below its minimum
sends no number about its cases."""

import json
import re
import struct
from collections import Counter

import pydicom
import pytest
from tiny_capture_run import MIN_REPORT_CASES, REPORTING, SITES, SUPPRESSED, captured_run

from models.wire import COUNTS, METRICS, STATS

DICOM_IDENTIFIERS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "StudyID",
    "AccessionNumber",
)
AGGREGATE_KEY = re.compile(
    rf"({'|'.join(METRICS)})-(wt|tc|et)-({'|'.join(STATS)})|({'|'.join(COUNTS)})-(wt|tc|et)"
    r"|dice-mean(-ci-low|-ci-high)?|spacing-(min|max)-mm|n-cases|n-skipped|num-examples"
)
RATIO_METRICS = ("dice", "nsd", "sensitivity", "precision")


def distinctive(key: str, value: float) -> bool:
    """A ratio with more than four decimals (not 0, 1, 0.5, …): no other number in a message equals it by chance."""
    return key.split("-")[0] in RATIO_METRICS and value != round(value, 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return captured_run(tmp_path_factory)


def identifiers(run) -> set[str]:
    """Case ids, file and folder names, paths of the data, and the DICOM identifiers in its files."""
    found: set[str] = set()
    for site in SITES:
        root = run.data / site
        found.add(str(root))
        for path in root.rglob("*"):
            found |= {str(path), path.name, path.name.split(".")[0]}
            if path.is_file() and site == "hospital-b":
                dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                found |= {str(dataset.get(k)) for k in DICOM_IDENTIFIERS if dataset.get(k)}
    return {text for text in found if text and text not in SITES and len(text) >= 4}


def per_case(run, site: str) -> list[dict]:
    lines = (run.work(site) / "validation" / "per-case.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_every_message_of_every_site_is_captured(run):
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    for site in SITES:
        kinds = Counter(message.metadata.message_type for _, message in run.messages(site))
        assert kinds == {"query.describe": 1, "train": 1, "evaluate": sum(r["site"] == site for r in records)}
        assert not any(message.has_error() for _, message in run.messages(site))


def test_no_identifier_in_any_message_or_coordinator_file(run):
    secrets = identifiers(run)
    assert (
        any(re.fullmatch(r"1\.[0-9.]+", s) for s in secrets) and "hospital-a-001" in secrets
    )  # really collected
    coordinator_files = [
        p
        for p in run.run_dir.rglob("*")
        if p.is_file()
        and p.suffix in (".json", ".jsonl", ".log", ".csv", ".html")
        and "sites" not in p.relative_to(run.run_dir).parts
        and "flwr-home" not in p.relative_to(run.run_dir).parts
    ]
    assert {p.name for p in coordinator_files} >= {
        "metrics.jsonl",
        "summary.json",
        "report.html",
        "flwr-run.log",
    }
    blobs = [(name, raw) for site in SITES for name, raw in run.captured[site]]
    blobs += [(str(p), p.read_bytes()) for p in coordinator_files]
    leaks = [(name, secret) for name, raw in blobs for secret in secrets if secret.encode() in raw]
    assert leaks == []


def test_only_aggregates_travel(run):
    for site in SITES:
        for name, message in run.messages(site):
            for record in message.content.metric_records.values():
                assert all(not isinstance(v, list) for v in record.values()), name
            if message.metadata.message_type == "evaluate" and site == REPORTING:
                (metrics,) = message.content.metric_records.values()
                assert [k for k in metrics if not AGGREGATE_KEY.fullmatch(k)] == []
                assert metrics["n-cases"] >= MIN_REPORT_CASES


def test_the_reporting_sites_extreme_cases_never_leave(run):
    """Median and quartiles of 5 cases are order statistics; the best and the worst case must not be sent."""
    cases = per_case(run, REPORTING)
    sent = b"".join(raw for site in SITES for _, raw in run.captured[site])
    checked = 0
    for server_round in {c["round"] for c in cases}:
        values_of = [c["metrics"] for c in cases if c["round"] == server_round]
        for key in values_of[0]:
            values = [m[key] for m in values_of]
            if len(set(values)) == len(values) and all(distinctive(key, v) for v in values):
                for extreme in (min(values), max(values)):
                    assert struct.pack("<d", extreme) not in sent, (server_round, key, extreme)
                    checked += 1
    assert checked >= 8


def test_a_site_below_its_minimum_sends_none_of_its_numbers(run):
    cases = per_case(run, SUPPRESSED)
    assert 0 < len({c["case_id"] for c in cases}) < MIN_REPORT_CASES
    for name, message in run.messages(SUPPRESSED):
        if message.metadata.message_type == "evaluate":
            assert not message.content.metric_records, name
            validation = message.content.config_records["validation"]
            assert validation["status"] == "suppressed" and validation["min-report-cases"] == MIN_REPORT_CASES
    own = {v for c in cases for k, v in c["metrics"].items() if distinctive(k, v)}
    assert own
    sent = b"".join(raw for site in SITES for _, raw in run.captured[site])
    assert [v for v in own if struct.pack("<d", v) in sent] == []
    kept = (run.run_dir / "metrics.jsonl").read_text() + (run.run_dir / "report.json").read_text()
    assert [v for v in own if repr(v) in kept] == []
