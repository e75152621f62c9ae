"""Privacy of a real run: every Message each site sends (captured at its ClientApp), and every file the
coordinator keeps, hold no case id, file name, DICOM identifier or per-case value; a site below its minimum
sends no number about its cases, and a site below its min-train-cases no weights."""

import json
import re
import struct
from collections import Counter

import pydicom
import pytest
from flwr.app import Message
from tiny_capture_run import MIN_REPORT_CASES, REPORTING, SITES, SUPPRESSED, captured_run

from models.shared.wire import COUNTS, METRICS, STATS, Record
from site_app.learning.metrics import HD95_PENALTY_MM

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
    r"|dice-mean(-ci-low|-ci-high)?|n-cases|n-skipped|num-examples"
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
        validations = sum(r["site"] == site for r in records)
        # one message per round: round 0's validation rode on the train reply, the last round's on an evaluate one
        carried = sum(
            bool({Record.VALIDATION, Record.VALIDATION_METRICS} & set(message.content.keys()))
            for _, message in run.messages(site)
            if message.metadata.message_type == "train"
        )
        assert kinds == {"query.describe": 1, "train": 1, "evaluate": validations - carried}
        assert carried == 1 and validations == 2
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
                assert metrics["n-cases"] == MIN_REPORT_CASES  # 20 % of 26, the site's own split


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


def test_a_site_below_its_min_train_cases_sends_no_weights(run):
    (train,) = [m for _, m in run.messages(SUPPRESSED) if m.metadata.message_type == "train"]
    assert not train.content.array_records and not train.content.metric_records
    assert dict(train.content.config_records["training"]) == {
        "status": "declined",
        "reason": "n < 5",
        "min-train-cases": 5,
    }
    (trained,) = [m for _, m in run.messages(REPORTING) if m.metadata.message_type == "train"]
    assert next(iter(trained.content.metric_records.values()))["num-examples"] == 21
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["train"]["status"] for r in records if r["site"] == SUPPRESSED and r["train"]} == {"declined"}
    log = (run.work(REPORTING) / "logs" / "site.log").read_text()
    assert "the run's seed (1) is not used to choose validation cases" in log


def numbers(value: object, skip: tuple[str, ...] = ()) -> list[float]:
    """Every number in a JSON value, leaving out the parts named in `skip` (keys, at any depth)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for k, v in value.items() if k not in skip for n in numbers(v, skip)]
    return [n for item in value for n in numbers(item, skip)]


def sent_numbers(message: Message) -> list[float]:
    records = [*message.content.metric_records.values(), *message.content.config_records.values()]
    return numbers([dict(record) for record in records])


def test_no_number_the_sites_sent_or_the_coordinator_kept_is_a_case_value(run):
    """(d) Every per-case metric value and voxel edge the sites keep (validation/per-case.jsonl), against every
    number in every reply (weights aside), in metrics.jsonl and in report.json. Allowed: 0, 1 and the empty-mask
    penalty (shared by many cases by definition); the per-case lesion and empty-mask counts (small whole numbers)
    are not compared with case counts and sums. report.json's run facts and the coordinator's own run config
    (timings, model size, spacing-mm) are the coordinator's numbers, not the sites'."""
    own = set()
    for site in SITES:
        for case in per_case(run, site):
            own |= {float(v) for k, v in case["metrics"].items() if k.rsplit("-", 1)[0] in METRICS}
            own |= {float(s) for s in case["spacing_mm"]}
    own -= {0.0, 1.0, HD95_PENALTY_MM}
    assert len(own) > 100
    found = {
        f"{site} {name}": sent_numbers(message) for site in SITES for name, message in run.messages(site)
    }
    found["metrics.jsonl"] = numbers(
        [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    )
    report = json.loads((run.run_dir / "report.json").read_text())
    found["report.json"] = numbers(report, skip=("run", "training", "model"))
    assert all(found.values()) and len(found["report.json"]) > 50
    assert [(where, v) for where, values in found.items() for v in values if v in own] == []


def test_position_statistics_are_withheld_below_min_position_cases(run):
    for _, message in run.messages(REPORTING):
        if message.metadata.message_type == "evaluate":
            (metrics,) = message.content.metric_records.values()
            assert not [k for k in metrics if k.endswith(("-median", "-q1", "-q3"))]
            assert list(message.content.config_records["validation"]["withheld"]) == [
                "median (n < 10)",
                "q1 (n < 10)",
                "q3 (n < 10)",
            ]
