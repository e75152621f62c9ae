"""`oncofed run` plans a run before submitting it: the quorum defaults to a majority of the kit's sites, every
site is named to the ServerApp, `--init` takes a saved model of the same preset, and `--resume` continues a run
folder with its own settings (only quorum and deadlines may change)."""

import json

import pytest

from deploy.coordinator.run_submission import plan_resume, plan_run
from deploy.kits.contents import read_coordinator_kit
from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import provision
from models.presets import build_model
from models.weights import save_checkpoint, to_record
from server_app.rounds.round_checkpoint import CHECKPOINT_FILE

SITES = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    (root / "spec.toml").write_text(
        f'federation = "plan"\nsites = {json.dumps(SITES)}\n\n[coordinator]\naddresses = ["localhost"]\nport = 9\n'
    )
    provision(read_spec(root / "spec.toml"), root / "kits", generate_site_keys=True)
    return read_coordinator_kit(root / "kits" / "coordinator")


def test_the_quorum_defaults_to_a_majority_and_every_site_is_named(kit):
    plan = plan_run(kit, 3, "tiny")
    assert plan.run_config["min-sites"] == 2 and plan.run_config["expected-sites"] == ",".join(SITES)
    assert plan_run(kit, 3, "tiny", "min-sites=3 train-timeout-s=60").run_config["min-sites"] == 3
    with pytest.raises(ValueError, match="`min-sites` is 4 but the federation has only 3 sites"):
        plan_run(kit, 3, "tiny", "min-sites=4")
    with pytest.raises(ValueError, match="--run-config sets resume"):
        plan_run(kit, 3, "tiny", "resume=true")


def test_init_takes_a_saved_model_of_the_same_preset(kit, tmp_path):
    model = tmp_path / "final.pt"
    save_checkpoint(to_record(build_model("tiny", seed=0)), model, {"round": 3, "model_preset": "tiny"})
    assert plan_run(kit, 2, "tiny", init_model=model).run_config["init-model"] == str(model.resolve())
    with pytest.raises(
        ValueError, match="is a 'tiny' model, but this run uses --preset small; give --preset tiny"
    ):
        plan_run(kit, 2, "small", init_model=model)
    with pytest.raises(ValueError, match="no such file"):
        plan_run(kit, 2, "tiny", init_model=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ValueError, match="is not a model saved by an OncoFed run"):
        plan_run(kit, 2, "tiny", init_model=tmp_path / "junk.pt")


def interrupted_run(kit, status: str = "running"):
    run_dir = kit.runs / f"run-{status}"
    config = {**plan_run(kit, 4, "tiny", "local-epochs=1 min-sites=3").run_config, "run-dir": str(run_dir)}
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run_config": config}))
    (run_dir / "summary.json").write_text(json.dumps({"status": status}))
    return run_dir


def test_resume_keeps_the_runs_settings(kit):
    run_dir = interrupted_run(kit)
    with pytest.raises(ValueError, match="no round checkpoint"):
        plan_resume(kit, run_dir, None)
    (run_dir / CHECKPOINT_FILE).parent.mkdir()
    (run_dir / CHECKPOINT_FILE).write_bytes(b"checkpoint")

    plan = plan_resume(kit, run_dir, None, "wait-for-sites-s=60 min-sites=2")
    config = plan.run_config
    assert (config["resume"], config["init-model"], config["run-dir"]) == (True, "", str(run_dir))
    assert (config["num-server-rounds"], config["local-epochs"], config["model-preset"]) == (4, 1, "tiny")
    assert (config["min-sites"], config["wait-for-sites-s"]) == (2, 60)
    assert plan_resume(kit, run_dir, 6).run_config["num-server-rounds"] == 6
    with pytest.raises(ValueError, match="a resumed run keeps its settings; only"):
        plan_resume(kit, run_dir, None, "local-epochs=3")
    with pytest.raises(ValueError, match="--rounds 3 is fewer than the 4 rounds"):
        plan_resume(kit, run_dir, 3)


def test_a_completed_run_is_resumed_only_to_extend_it(kit):
    run_dir = interrupted_run(kit, status="completed")
    (run_dir / CHECKPOINT_FILE).parent.mkdir()
    (run_dir / CHECKPOINT_FILE).write_bytes(b"checkpoint")
    with pytest.raises(ValueError, match="completed all its 4 rounds; give --rounds N"):
        plan_resume(kit, run_dir, None)
    assert plan_resume(kit, run_dir, 5).run_config["num-server-rounds"] == 5


def test_a_simulation_resumes_with_its_saved_settings(tmp_path):
    from deploy.simulation.plan import plan_resumed_simulation

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {
        "sim-data": str(tmp_path / "data"),
        "expected-sites": "hospital-a,hospital-b",
        "num-server-rounds": 3,
    }
    (run_dir / "config.json").write_text(json.dumps({"run_config": config}))
    with pytest.raises(ValueError, match="no round checkpoint"):
        plan_resumed_simulation(run_dir)
    (run_dir / CHECKPOINT_FILE).parent.mkdir()
    (run_dir / CHECKPOINT_FILE).write_bytes(b"checkpoint")
    plan = plan_resumed_simulation(run_dir)
    assert plan.n_sites == 2 and plan.run_config == {**config, "resume": True, "init-model": ""}
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ValueError, match="completed all its rounds"):
        plan_resumed_simulation(run_dir)
    with pytest.raises(ValueError, match="not the run folder of a simulation"):
        plan_resumed_simulation(tmp_path)
