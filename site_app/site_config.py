"""Who this site is and where its folders are, from Flower's node config (or the simulation's partition)."""

from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from data_prep.errors import SiteDataError
from models.wire import NODE_SITE_CONFIG


@dataclass(frozen=True)
class SitePaths:
    """The site's name, its read-only data folder and the work folder it owns (cache, logs)."""

    name: str
    data: Path
    work: Path
    settings_file: Path | None = None
    """The site's site.toml ([series], [labels], [limits]); None in simulation (defaults)."""


def resolve_site(context: Context) -> SitePaths:
    """Deployment: node config `site-name`, `data-path`, `work-path`, and `site-config` (site.toml).

    Simulation: `partition-id` indexes the sorted site folders under the run config's `sim-data`;
    the site's name is its folder's name and its work folder is `sim-work`/<name>.
    """
    node = context.node_config
    if "data-path" in node:
        data = Path(str(node["data-path"])).expanduser()
        name = str(node.get("site-name") or data.name)
        work = Path(str(node.get("work-path") or "")).expanduser()
        if not str(work) or work == Path("."):
            raise SiteDataError(
                f"site {name!r}: node config has no `work-path` (a folder the site may write to)"
            )
        settings = str(node.get(NODE_SITE_CONFIG) or "")
        paths = SitePaths(name=name, data=data, work=work, settings_file=Path(settings) if settings else None)
    elif "partition-id" in node:
        paths = _simulated_site(int(node["partition-id"]), int(node["num-partitions"]), context.run_config)
    else:
        raise SiteDataError(
            "node config has neither `data-path` (deployment) nor `partition-id` (simulation)"
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


def _simulated_site(partition: int, n_partitions: int, run_config: dict) -> SitePaths:
    root = Path(str(run_config.get("sim-data", "")))
    if not str(root) or root == Path("."):
        raise SiteDataError(
            "simulation run config has no `sim-data` (the folder holding one folder per site)"
        )
    folders = site_folders(root)
    if len(folders) != n_partitions:
        raise SiteDataError(
            f"{root} holds {len(folders)} site folders but the simulation has {n_partitions} sites"
        )
    data = folders[partition]
    return SitePaths(name=data.name, data=data, work=Path(str(run_config["sim-work"])) / data.name)
