"""The per-site results table: first and last evaluated round for each site, from metrics.jsonl records.

A site that sent no numbers shows why instead: "suppressed (n < k)" (fewer validation cases than its
`min-report-cases`), "suppressed (<the site's reason>)" (another rule of its disclosure policy) or
"refused (<setting and limit>)" (a run setting outside the site's limits); a median the site's policy withheld
(fewer cases than its `min-position-cases`) shows "withheld". The region columns are the regions the sites
evaluated (their conventions, else their metric keys): whatever `eval-regions` the run used. Records of rounds a
site missed (offline, timeout, failed, dropped) carry no validation and are left out here (the report's
participation grid shows them: server_app.rounds.participation).

When the sites ran a local-only baseline (run setting `local-baseline`), two more columns answer "did federation
help this site?": the local-only model's mean Dice and the paired difference global − local-only with the 95 % CI
the site computed (its `gain-dice-mean…` keys).
"""

from rich.console import Console
from rich.table import Table

from models.shared.wire import (
    EVALUATE_STATUSES,
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    Status,
    Validation,
    baseline_key,
    regions_in,
    stat_key,
)


def evaluations(records: list[dict]) -> list[dict]:
    """The records whose validation reply arrived (models.shared.wire.EVALUATE_STATUSES; no status: a run from before
    statuses): not those of a site that was offline, timed out, failed or was dropped that round."""
    return [r for r in records if r.get("status", Status.REPORTED) in EVALUATE_STATUSES]


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
    """The site sent no validation numbers for this round (suppressed or refused)."""
    return record.get("status", Status.REPORTED) != Status.REPORTED


def suppressed_text(record: dict) -> str:
    """Why a site sent no numbers, in its own words ("n < 5", the setting and limit it refused)."""
    reason = record.get("reason") or f"n < {record.get('min_report_cases')}"
    return f"{record.get('status', Status.SUPPRESSED)} ({reason})"


def region_names(records: list[dict]) -> list[str]:
    """The evaluation regions the sites used: from their conventions, else from the metric keys they reported."""
    for record in records:
        regions = (record.get("conventions") or {}).get(Validation.REGIONS)
        if regions:
            return list(regions)
    return regions_in(key for record in records for key in record.get("metrics") or {})


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
    hd95_key = stat_key("hd95", regions[0], "median") if regions else None
    if hd95_key:
        table.add_column(f"HD95 {regions[0].upper()} mm", justify="right")
    baseline = any(LOCAL_MEAN in (last.get("metrics") or {}) for _, last in sites.values())
    if baseline:
        table.add_column("Local-only", justify="right")
        table.add_column("Global − local-only [95 % CI]", justify="right")
    for site, (first, last) in sites.items():
        if is_suppressed(last):
            table.add_row(
                site,
                "—",
                _dice(first, first_round),
                suppressed_text(last),
                *[""] * (len(regions) + bool(hd95_key) + 2 * baseline),
            )
            continue
        metrics = last["metrics"]
        table.add_row(
            site,
            str(last["n_cases"]),
            _dice(first, first_round),
            _dice(last, last_round)
            + (
                f" [{metrics[MEAN_DICE_CI_LOW]:.3f}, {metrics[MEAN_DICE_CI_HIGH]:.3f}]"
                if MEAN_DICE_CI_LOW in metrics
                else ""
            ),
            *(_number(metrics, stat_key("dice", region, "mean"), 3) for region in regions),
            *([_number(metrics, hd95_key, 1, missing="withheld")] if hd95_key else []),
            *(baseline_cells(metrics) if baseline else []),
        )
    return table


LOCAL_MEAN = baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean")


def baseline_cells(metrics: dict) -> list[str]:
    """The local-only model's mean Dice and global − local-only with its paired CI; "withheld" when the site sent
    none (no local-only model yet, or its policy)."""
    gain = [metrics.get(baseline_key(GAIN_PREFIX, "dice", None, s)) for s in ("mean", "ci-low", "ci-high")]
    if LOCAL_MEAN not in metrics or None in gain:
        return ["withheld", "withheld"]
    return [f"{metrics[LOCAL_MEAN]:.3f}", f"{gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}]"]


def _number(metrics: dict, key: str, digits: int, missing: str = "") -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else missing


def _dice(record: dict, expected_round: int) -> str:
    text = suppressed_text(record) if is_suppressed(record) else f"{record['metrics'][MEAN_DICE]:.3f}"
    return text if record["round"] == expected_round else f"{text} (r{record['round']})"


def site_table_text(records: list[dict], width: int = 140) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - export only
    console.print(site_table(records))
    return console.export_text()
