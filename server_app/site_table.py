"""The per-site results table: first and last evaluated round for each site, from metrics.jsonl records.

A site that suppressed its numbers (fewer validation cases than its `min-report-cases`) shows
"suppressed (n < k)" instead of numbers. Records of rounds a site missed (offline, timeout, …) carry no
validation and are left out here (see server_app.participation for them).
"""

from rich.console import Console
from rich.table import Table

from server_app.run_folder import REPORTED, SUPPRESSED


def evaluations(records: list[dict]) -> list[dict]:
    """The records whose validation arrived: "reported" or "suppressed" (no status: a run from before statuses)."""
    return [r for r in records if r.get("status", REPORTED) in (REPORTED, SUPPRESSED)]


def first_and_last(records: list[dict]) -> dict[str, tuple[dict, dict]]:
    """site → (record of its first evaluated round, record of its last)."""
    by_site: dict[str, list[dict]] = {}
    for record in records:
        by_site.setdefault(record["site"], []).append(record)
    return {
        site: (min(rs, key=lambda r: r["round"]), max(rs, key=lambda r: r["round"]))
        for site, rs in sorted(by_site.items())
    }


def is_suppressed(record: dict) -> bool:
    return record.get("status") == SUPPRESSED


def suppressed_text(record: dict) -> str:
    return f"suppressed (n < {record.get('min_report_cases')})"


def region_names(records: list[dict]) -> list[str]:
    """The evaluation regions the sites reported (from their conventions), in their order."""
    return next(
        (list(r["conventions"]["regions"]) for r in records if r.get("conventions", {}).get("regions")),
        ["wt", "tc", "et"],
    )


def site_table(records: list[dict]) -> Table:
    records = evaluations(records)
    sites = first_and_last(records)
    regions = region_names(records)
    first_round = min((first["round"] for first, _ in sites.values()), default=0)
    last_round = max((last["round"] for _, last in sites.values()), default=0)
    table = Table(
        title=f"Validation per site (mean Dice over regions and cases with its 95 % CI; per region: mean "
        f"Dice and median HD95 at round {last_round})"
    )
    table.add_column("Site", no_wrap=True)
    table.add_column("Cases", justify="right")
    table.add_column(f"Dice r{first_round}", justify="right")
    table.add_column(f"Dice r{last_round} [95 % CI]", justify="right")
    for region in regions:
        table.add_column(region.upper(), justify="right")
    table.add_column(f"HD95 {regions[0].upper()} mm", justify="right")
    for site, (first, last) in sites.items():
        if is_suppressed(last):
            table.add_row(
                site, "—", _dice(first, first_round), suppressed_text(last), *[""] * (len(regions) + 1)
            )
            continue
        metrics = last["metrics"]
        table.add_row(
            site,
            str(last["n_cases"]),
            _dice(first, first_round),
            _dice(last, last_round)
            + (
                f" [{metrics['dice-mean-ci-low']:.3f}, {metrics['dice-mean-ci-high']:.3f}]"
                if "dice-mean-ci-low" in metrics
                else ""
            ),
            *(f"{metrics[f'dice-{region}-mean']:.3f}" for region in regions),
            f"{metrics[f'hd95-{regions[0]}-median']:.1f}" if f"hd95-{regions[0]}-median" in metrics else "",
        )
    return table


def _dice(record: dict, expected_round: int) -> str:
    text = suppressed_text(record) if is_suppressed(record) else f"{record['metrics']['dice-mean']:.3f}"
    return text if record["round"] == expected_round else f"{text} (r{record['round']})"


def site_table_text(records: list[dict], width: int = 140) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - export only
    console.print(site_table(records))
    return console.export_text()
