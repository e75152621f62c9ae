"""The cross-site generalization matrix as the report shows it: rows the models (the federated model, each
consenting site's own local-only model), columns the sites where each was measured, only the cells the sites
allowed, and the sentence a board reads.

Sources: the last validated round of each site in metrics.jsonl (the federated model at every site; a site's own
local-only model at that site, its `local-dice-mean`) and the run folder's cross_site.json
(server_app.rounds.cross_site: a consenting site's local-only model at the other consenting sites). A cell the
sites did not allow (a model of a site that did not consent, or measured at one) is absent, not zero.
"""

from pathlib import Path

from models.shared.wire import LOCAL_ONLY_PREFIX, MEAN_DICE, Status, baseline_key
from server_app.report.site_table import evaluations, first_and_last, is_suppressed, suppressed_text
from server_app.run_record.run_folder import CROSS_SITE_FILE, read_json

FEDERATED = "federated model"


def cross_site_data(run_dir: Path, records: list[dict]) -> dict | None:
    """{"sites", "rows": [{"model", "owner", "cells": {site: cell}}], "sentences"}; None without a matrix."""
    matrix = read_json(run_dir / CROSS_SITE_FILE)
    if not matrix:
        return None
    last = {site: rec for site, (_, rec) in first_and_last(evaluations(records)).items()}
    sites = sorted(last)
    federated = {site: _global_cell(rec) for site, rec in last.items()}
    rows = [{"model": FEDERATED, "owner": None, "cells": federated}]
    for owner in matrix.get("consenting", []):
        cells = {}
        own = last.get(owner)
        local_mean = (own or {}).get("metrics", {}).get(baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean"))
        if own is not None and not is_suppressed(own) and local_mean is not None:
            cells[owner] = {"value": float(local_mean), "n_cases": own.get("n_cases"), "own_site": True}
        for cell in matrix.get("cells", []):
            if cell["model"] == owner:
                cells[cell["site"]] = _relayed_cell(cell)
        rows.append({"model": f"{owner}'s own model", "owner": owner, "cells": cells})
    return {
        "sites": sites,
        "rows": rows,
        "not_consenting": matrix.get("not_consenting", []),
        "models": matrix.get("models", {}),
        "sentences": [s for row in rows[1:] if (s := board_sentence(row, federated))],
    }


def _global_cell(record: dict) -> dict:
    if is_suppressed(record):
        return {"value": None, "text": suppressed_text(record)}
    return {"value": float(record["metrics"][MEAN_DICE]), "n_cases": record.get("n_cases")}


def _relayed_cell(cell: dict) -> dict:
    if cell.get("status") == Status.REPORTED and cell.get(MEAN_DICE) is not None:
        return {"value": float(cell[MEAN_DICE]), "n_cases": cell.get("n_cases")}
    return {"value": None, "text": f"{cell.get('status')} ({cell.get('reason', '')})".replace(" ()", "")}


def board_sentence(row: dict, federated: dict[str, dict]) -> str | None:
    """ "hospital-c's own model scores 0.41 at the other sites; the federated model 0.78": case-weighted mean Dice
    over the other sites where both were measured; None where there is no such site."""
    others = [
        site
        for site, cell in row["cells"].items()
        if site != row["owner"]
        and cell.get("value") is not None
        and federated.get(site, {}).get("value") is not None
    ]
    if not others:
        return None
    own = _weighted([row["cells"][s] for s in others])
    fed = _weighted([federated[s] for s in others])
    where = "the other site" if len(others) == 1 else "the other sites"
    return (
        f"{row['owner']}'s own model scores {own:.2f} at {where} ({', '.join(others)}); "
        f"the federated model {fed:.2f}"
    )


def _weighted(cells: list[dict]) -> float:
    weights = [float(c.get("n_cases") or 1) for c in cells]
    return sum(c["value"] * w for c, w in zip(cells, weights, strict=True)) / sum(weights)
