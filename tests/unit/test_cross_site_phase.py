"""The cross-site phase after the last round (server_app.rounds.cross_site) against scripted sites: only sites that
consent are asked for their local-only model, each model goes only to the other consenting sites, and the matrix
file holds exactly those cells. The site's own refusal is tested in test_model_sharing.py."""

import json

import pytest
from flwr.app import ArrayRecord, RecordDict
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config, validated

from models.presets import build_model
from models.weights import to_record
from server_app.app import run_federation
from server_app.run_record.run_folder import CROSS_SITE_FILE
from site_app.disclosure.model_sharing import refused_sharing

SITES = ("hospital-a", "hospital-b", "hospital-c")


def local_model(offset: float):
    """A site that sends a local-only model whose first value marks whose it is."""

    def reply(_message) -> RecordDict:
        state = {
            k: v + offset for k, v in to_record(build_model("tiny", seed=0)).to_torch_state_dict().items()
        }
        return RecordDict({"arrays": ArrayRecord(state)})

    return reply


def marked(message) -> float:
    arrays = message.content["arrays"]
    return float(next(iter(arrays.values())).numpy().ravel()[0])


def sites(c_consents: bool = False) -> dict[int, ScriptedSite]:
    return {
        11: ScriptedSite("hospital-a", shares_local_model=True, local_model=local_model(100.0)),
        12: ScriptedSite("hospital-b", shares_local_model=True, local_model=local_model(200.0), dice=0.6),
        # hospital-c did not consent; its script would hand its model over if it were asked
        13: ScriptedSite(
            "hospital-c",
            shares_local_model=c_consents,
            local_model=local_model(300.0),
            cross_evaluate=lambda _m: validated(0.9, 2),
        ),
    }


def test_only_consenting_sites_are_asked_and_get_the_others_models(tmp_path, flower_task):
    grid_sites = sites()
    outcome = run_federation(
        ScriptedGrid(grid_sites), scripted_run_config(tmp_path / "run", list(SITES), num_server_rounds=1)
    )

    assert outcome.status == "completed"
    kinds = {site.name: [kind for kind, _, _ in site.received] for site in grid_sites.values()}
    assert "query.local_model" not in kinds["hospital-c"]
    assert "query.cross_evaluate" not in kinds["hospital-c"]
    assert (
        kinds["hospital-a"].count("query.local_model") == kinds["hospital-b"].count("query.local_model") == 1
    )
    relayed = {
        site.name: [marked(m) for kind, _, m in site.received if kind == "query.cross_evaluate"]
        for site in grid_sites.values()
    }
    initial = float(next(iter(to_record(build_model("tiny", seed=0)).values())).numpy().ravel()[0])
    assert relayed["hospital-a"] == [pytest.approx(initial + 200.0)]  # b's model, measured at a
    assert relayed["hospital-b"] == [pytest.approx(initial + 100.0)]
    matrix = json.loads((tmp_path / "run" / CROSS_SITE_FILE).read_text())
    assert matrix["consenting"] == ["hospital-a", "hospital-b"]
    assert matrix["not_consenting"] == ["hospital-c"]
    assert {(c["model"], c["site"]): c["dice-mean"] for c in matrix["cells"]} == {
        ("hospital-a", "hospital-b"): 0.6,
        ("hospital-b", "hospital-a"): 0.5,
    }


def test_with_one_consenting_site_nothing_is_asked(tmp_path, flower_task):
    grid_sites = sites()
    grid_sites[12].shares_local_model = False
    run_federation(
        ScriptedGrid(grid_sites), scripted_run_config(tmp_path / "run", list(SITES), num_server_rounds=1)
    )

    assert not any(
        kind.startswith("query.local_model") for s in grid_sites.values() for kind, _, _ in s.received
    )
    assert not (tmp_path / "run" / CROSS_SITE_FILE).exists()


def test_a_site_that_refuses_leaves_its_row_empty(tmp_path, flower_task):
    grid_sites = sites(c_consents=True)
    grid_sites[13].local_model = lambda _m: refused_sharing("no local-only model")
    run_federation(
        ScriptedGrid(grid_sites), scripted_run_config(tmp_path / "run", list(SITES), num_server_rounds=1)
    )

    matrix = json.loads((tmp_path / "run" / CROSS_SITE_FILE).read_text())
    assert matrix["models"]["hospital-c"].startswith("refused")
    assert {c["model"] for c in matrix["cells"]} == {"hospital-a", "hospital-b"}
    assert {(c["model"], c["site"]) for c in matrix["cells"] if c["site"] == "hospital-c"} == {
        ("hospital-a", "hospital-c"),
        ("hospital-b", "hospital-c"),
    }
