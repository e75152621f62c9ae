"""Who this site is and where its folders are, from Flower's node config (or the simulation's partition)."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context

from data_prep.errors import SiteDataError
from models.shared.node_config import NodeConfig
from models.shared.run_config import SIM_DATA, SIM_WORK
from site_app.settings.secret import provide_simulated_secret

if TYPE_CHECKING:  # run_settings imports MONAI; the operator CLI imports this module for site_folders
    from site_app.settings.run_settings import SiteRunSettings


@dataclass(frozen=True)
class SitePaths:
    """The site's name, its read-only data folder and the work folder it owns (cache, logs)."""

    name: str
    data: Path
    work: Path
    settings_file: Path | None = None
    """The site's site.toml ([series], [labels], [limits]); None in simulation (defaults)."""


def resolve_site(context: Context, settings: "SiteRunSettings | None" = None) -> SitePaths:
    """Deployment: node config `site-name`, `data-path`, `work-path`, `site-config` (site.toml).

    Simulation: `partition-id` indexes the sorted site folders under the run setting `sim-data`; the site's
    name is its folder's name and its work folder is `sim-work`/<name>, whose secret derives from the run's seed
    and the name (site_app.settings.secret.provide_simulated_secret). A node config naming `data-path` is a
    deployed site's, whatever else it holds: the simulation's branch, and so the derived secret, is never taken. `settings`: the run's, when the caller
    has read them already; a deployed site needs none (so a bad run config never hides where its log is).
    """
    if settings is None and NodeConfig.DATA_PATH not in context.node_config:
        from site_app.settings.run_settings import SiteRunSettings

        settings = SiteRunSettings.from_run_config(context.run_config)
    return site_paths(context.node_config, settings)


def site_paths(node: Mapping[str, object], settings: "SiteRunSettings | None") -> SitePaths:
    """The site's folders from its node config, checked (see resolve_site); `settings` serve a simulated site."""
    if NodeConfig.DATA_PATH in node:
        data = Path(str(node[NodeConfig.DATA_PATH])).expanduser()
        name = str(node.get(NodeConfig.SITE_NAME) or data.name)
        work = Path(str(node.get(NodeConfig.WORK_PATH) or "")).expanduser()
        if not str(work) or work == Path("."):
            raise SiteDataError(
                f"site {name!r}: node config has no `{NodeConfig.WORK_PATH}` (a folder the site may write to)"
            )
        settings_file = str(node.get(NodeConfig.SITE_CONFIG) or "")
        paths = SitePaths(
            name=name, data=data, work=work, settings_file=Path(settings_file) if settings_file else None
        )
    elif NodeConfig.PARTITION_ID in node:
        paths = _simulated_site(
            int(node[NodeConfig.PARTITION_ID]), int(node[NodeConfig.NUM_PARTITIONS]), settings
        )
    else:
        raise SiteDataError(
            f"node config has neither `{NodeConfig.DATA_PATH}` (deployment) nor `{NodeConfig.PARTITION_ID}`"
            " (simulation)"
        )
    if not paths.data.is_dir():
        raise SiteDataError(f"site {paths.name!r}: data path {paths.data} does not exist or is not a folder")
    if paths.work.resolve().is_relative_to(paths.data.resolve()):
        raise SiteDataError(
            f"site {paths.name!r}: work path {paths.work} lies inside the read-only data folder"
        )
    return paths


def site_folders(root: Path) -> list[Path]:
    """The site folders of a simulated federation, in the order partition ids refer to them."""
    if not root.is_dir():
        raise SiteDataError(f"federation data folder {root} does not exist or is not a folder")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _simulated_site(partition: int, n_partitions: int, settings: "SiteRunSettings | None") -> SitePaths:
    if settings is None or settings.sim_data is None or settings.sim_work is None:
        raise SiteDataError(
            f"simulation run config has no `{SIM_DATA.key}` or `{SIM_WORK.key}` (the folder holding one folder"
            " per site, and the one for their work folders)"
        )
    folders = site_folders(settings.sim_data)
    if len(folders) != n_partitions:
        raise SiteDataError(
            f"{settings.sim_data} holds {len(folders)} site folders but the simulation has {n_partitions} sites"
        )
    data = folders[partition]
    work = settings.sim_work / data.name
    provide_simulated_secret(
        work, settings.seed, data.name
    )  # same seed, same split: reproducible simulations
    return SitePaths(name=data.name, data=data, work=work)
