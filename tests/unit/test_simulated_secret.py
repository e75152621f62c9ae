"""A simulated site's secret derives from the run's seed and the site's name (reproducible simulations); a deployed
site's stays random, whatever its node config or the coordinator's run config hold."""

import logging

from models.shared.node_config import DEPLOYED_NODE_CONFIG, NodeConfig
from models.shared.run_config import SEED, SIM_DATA, SIM_WORK, defaults
from site_app.disclosure.validation_split import site_split
from site_app.settings.identity import site_paths
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import SECRET_FILE, simulated_site_secret, site_secret

LOG = logging.getLogger("test")
CASES = [f"case-{i:02d}" for i in range(20)]
SIMULATED = {NodeConfig.PARTITION_ID: 1, NodeConfig.NUM_PARTITIONS: 2}
"""What Flower's Simulation Engine gives a virtual node."""


def federation(tmp_path):
    for site in ("hospital-a", "hospital-b"):
        (tmp_path / "data" / site).mkdir(parents=True, exist_ok=True)
    return tmp_path / "data"


def settings(data, work, seed: int) -> SiteRunSettings:
    return SiteRunSettings.from_run_config(
        {**defaults(), SIM_DATA.key: str(data), SIM_WORK.key: str(work), SEED.key: seed}
    )


def test_simulated_sites_of_two_runs_with_one_seed_share_their_secret_and_split(tmp_path):
    data = federation(tmp_path)
    first, again, other_seed = (
        site_paths(SIMULATED, settings(data, tmp_path / run, seed))
        for run, seed in (("run-1", 7), ("run-2", 7), ("run-3", 8))
    )
    assert first.name == again.name == "hospital-b" and first.work != again.work
    assert site_secret(first.work) == site_secret(again.work) == simulated_site_secret(7, "hospital-b")
    assert site_split(first.work, CASES, 0.2, LOG) == site_split(again.work, CASES, 0.2, LOG)
    assert site_secret(other_seed.work) != site_secret(first.work)
    assert simulated_site_secret(7, "hospital-a") != simulated_site_secret(7, "hospital-b")


def test_a_simulated_site_keeps_a_secret_it_already_has(tmp_path):
    """A resumed run (or a test that fixed it) keeps its work folder's secret."""
    data = federation(tmp_path)
    work = tmp_path / "run" / "hospital-b"
    (work / SECRET_FILE).parent.mkdir(parents=True)
    (work / SECRET_FILE).write_text(bytes(range(32)).hex() + "\n")
    site_paths(SIMULATED, settings(data, tmp_path / "run", 7))
    assert site_secret(work) == bytes(range(32))


def test_a_deployed_node_config_never_takes_the_derived_secret(tmp_path):
    """Even with every simulation key in its node config and a run config naming simulation folders and a seed,
    a node config with a data path is a deployed site's: its secret is random, unknown to the coordinator."""
    assert NodeConfig.DATA_PATH in DEPLOYED_NODE_CONFIG  # what `oncofed site start` always passes
    data = federation(tmp_path)
    secrets = []
    for site in ("one", "two"):
        node = {
            NodeConfig.DATA_PATH: str(data / "hospital-b"),
            NodeConfig.WORK_PATH: str(tmp_path / site / "hospital-b"),
            NodeConfig.SITE_NAME: "hospital-b",
            **SIMULATED,
        }
        paths = site_paths(node, settings(data, tmp_path / site, 7))
        assert paths.work == tmp_path / site / "hospital-b"
        assert not (paths.work / SECRET_FILE).exists()  # resolving a deployed site writes no secret
        secrets.append(site_secret(paths.work))
    assert secrets[0] != secrets[1]
    assert simulated_site_secret(7, "hospital-b") not in secrets
