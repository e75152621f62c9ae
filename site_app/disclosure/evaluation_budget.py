"""A site's evaluation budget: how many validations it answers per round of a run and per run.

An adaptive coordinator can send any number of evaluate instructions, each with a model of its choice, and every
reply is another set of equations in the same case values. The site counts the validations it answered, per
Flower run and per round, in its work folder (validation/evaluation-budget.json), and refuses beyond its limits
`max-evaluations-per-round` (default 2: the round's validation and one retry, e.g. of a resumed run) and
`max-evaluations-per-run` (default 200) of site.toml's [limits] (site_app.settings.limits). The round number is the
coordinator's, so the run-wide budget is the bound that holds; a new run starts a new budget (each run is one the
coordinator starts with the app the site approved). A simulated site has no budget (its limits: no curious
coordinator).
"""

import json
from pathlib import Path

from models.shared.atomic import atomic_write_json
from models.shared.node_config import limit_key
from models.shared.wire import OutsideLimit
from site_app.settings.limits import OutsideSiteLimits, SiteLimits

BUDGET_FILE = Path("validation") / "evaluation-budget.json"
"""In the work folder: {"<run id>": {"<round>": validations answered}}."""
EVALUATIONS = "evaluations"
"""The `setting` of a budget refusal's OutsideLimit fields: the count of validations this one would make."""


def spend_evaluation(
    work: Path, run_id: int, server_round: int, limits: SiteLimits
) -> OutsideSiteLimits | None:
    """Count one validation of `server_round` in run `run_id`, or say (without counting) why the budget refuses it."""
    path = work / BUDGET_FILE
    spent = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    rounds = spent.setdefault(str(int(run_id)), {})
    in_round = rounds.get(str(int(server_round)), 0)
    for count, bound, key, scope in (
        (in_round, limits.max_evaluations_per_round, "max-evaluations-per-round", "per round of a run"),
        (sum(rounds.values()), limits.max_evaluations_per_run, "max-evaluations-per-run", "per run"),
    ):
        if count >= bound:
            return OutsideSiteLimits(
                f"evaluation budget: this site answers at most {bound} validations {scope} (its limit"
                f" {limit_key(key)})",
                OutsideLimit(EVALUATIONS, count + 1, limit_key(key), bound),
            )
    rounds[str(int(server_round))] = in_round + 1
    atomic_write_json(path, spent)
    return None
