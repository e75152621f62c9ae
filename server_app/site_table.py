"""The per-site results table: first and last evaluated round for each site, from metrics.jsonl records."""

from rich.console import Console
from rich.table import Table

REGION_COLUMNS = (("dice-wt-mean", "WT"), ("dice-tc-mean", "TC"), ("dice-et-mean", "ET"),
                  ("hd95-wt-mean", "HD95 WT mm"))


def first_and_last(records: list[dict]) -> dict[str, tuple[dict, dict]]:
    """site → (record of its first evaluated round, record of its last)."""
    by_site: dict[str, list[dict]] = {}
    for record in records:
        by_site.setdefault(record["site"], []).append(record)
    return {site: (min(rs, key=lambda r: r["round"]), max(rs, key=lambda r: r["round"]))
            for site, rs in sorted(by_site.items())}


def site_table(records: list[dict]) -> Table:
    sites = first_and_last(records)
    first_round = min((first["round"] for first, _ in sites.values()), default=0)
    last_round = max((last["round"] for _, last in sites.values()), default=0)
    table = Table(title="Validation per site (means over its validation cases; WT, TC, ET: Dice at the last round)")
    table.add_column("Site")
    table.add_column("Cases", justify="right")
    table.add_column(f"Dice r{first_round}", justify="right")
    table.add_column(f"Dice r{last_round}", justify="right")
    for _, title in REGION_COLUMNS:
        table.add_column(title, justify="right")
    for site, (first, last) in sites.items():
        table.add_row(
            site,
            str(last["n_cases"]),
            _with_round(first, first_round),
            _with_round(last, last_round),
            *(f"{last['metrics'][key]:.3f}" if key.startswith("dice") else f"{last['metrics'][key]:.1f}"
              for key, _ in REGION_COLUMNS),
        )
    return table


def _with_round(record: dict, expected_round: int) -> str:
    text = f"{record['metrics']['dice-mean']:.3f}"
    return text if record["round"] == expected_round else f"{text} (r{record['round']})"


def site_table_text(records: list[dict], width: int = 120) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - export only
    console.print(site_table(records))
    return console.export_text()
