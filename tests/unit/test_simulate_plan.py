"""`oncofed simulate --run-config`: more run settings, checked before any process starts."""

import pytest

from data_prep.synth.federation import write_federation
from deploy.simulation.plan import plan_simulation


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("federation")
    write_federation(folder, n_sites=2, seed=0, preset="tiny")
    return folder


def test_run_config_overrides_reach_the_run_config(data, tmp_path):
    plan = plan_simulation(
        data, tmp_path / "run", 2, "tiny", 0, 'strategy="fedprox" proximal-mu=0.1 local-norm=true'
    )
    assert plan.run_config["strategy"] == "fedprox" and plan.run_config["proximal-mu"] == 0.1
    assert plan.run_config["local-norm"] is True and plan.run_config["num-server-rounds"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("strategie=1", "unknown key 'strategie'"),
        ("seed=3", "sets seed; use --rounds, --preset, --seed"),
        ('sim-data="/tmp/x"', "sets sim-data"),
        ('strategy="fedsgd"', "--run-config: run setting `strategy` is 'fedsgd', expected one of"),
        ("dp-clipping-norm=0", "`dp-clipping-norm` is 0.0, expected a number above 0"),
        (
            'strategy="fedyogi" dp-noise-multiplier=0.5',
            "`dp-noise-multiplier` is 0.5, expected 0 with strategy",
        ),
        ("local-baseline=1", "`local-baseline` is 1, expected true or false"),
        ("sim-min-lesion-mm3=-5.0", "`sim-min-lesion-mm3` is -5.0, expected at least 0"),
    ],
)
def test_bad_overrides_are_one_clear_error(data, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_simulation(data, tmp_path / "run", 2, "tiny", 0, overrides)
