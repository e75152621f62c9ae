"""A site's own settings file, site.toml: the one module that knows its schema and parses it.

A site kit's site.toml holds top-level keys, read by the site's launcher (deploy.kits.contents): the node-config keys the
ClientApp gets (models.shared.node_config.NodeConfig: site-name, data-path, work-path and the site's disclosure settings
min-report-cases, min-position-cases, min-train-cases, validation-fraction, min-lesion-mm3;
site_app.disclosure.policy; the local-DP noise multiplier and clipping norm, site_app.local_dp), `i-understand`
(true confirms thresholds below their defaults),
`coordinator` (host:port of the SuperLink), `private-key` (the site's own key, for its SuperNode) and
`runtime-port`. Any site.toml (also one given to
`oncofed site check --config`) may hold tables on how the export is read and on the run settings the site
accepts; every key in them is optional::

    [series]                       # which series of a study is the case's image
    modalities = ["CT", "MR"]      # DICOM Modality values allowed (default CT, MR)
    description = "(?i)t1.*post"   # regular expression searched in SeriesDescription (default: any)

    [labels]
    seg-segments = { "1" = 1, "2" = 2, "3" = 3 }    # DICOM-SEG segment number -> label value (default N -> N)
    rtstruct-rois = { "GTV" = 3, "Edema" = 2 }      # RTSTRUCT ROI name (any case) -> label value (default none)

    [limits]
    max-voxels = 134217728         # larger volumes are refused from their header (default 512^3)
    batch-size-max = 16            # and the site's limits on run settings (models.shared.node_config.LIMIT_KEYS, defaults
                                   # and meaning in site_app.settings.limits): a run outside them is refused

Among the series that pass the rules and that a label references, the largest is chosen.
Label values: 1 necrotic core, 2 edema, 3 enhancing tumor (models.shared.labels).
"""

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from data_prep.ingest_settings import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_MODALITIES,
    DEFAULT_SEG_SEGMENTS,
    IngestSettings,
)
from models.shared.node_config import LIMIT_KEYS, NodeConfig
from site_app.disclosure.policy import DisclosurePolicy
from site_app.settings.limits import SiteLimits

COORDINATOR = "coordinator"
"""Top-level key: host:port of the coordinator's SuperLink."""
RUNTIME_PORT = "runtime-port"
"""Top-level key: the local port on which the site's SuperNode serves its ClientApps."""
I_UNDERSTAND = "i-understand"
"""Top-level key: true confirms disclosure thresholds below their defaults (DisclosurePolicy.lowered); without it
such a site.toml is refused, naming the setting and this flag. Never passed to the ClientApp."""
PRIVATE_KEY = "private-key"
"""Top-level key: the site's own private key (made at the hospital with `oncofed site keygen`, never sent);
absolute, or relative to the kit. The launcher gives it to the SuperNode; the ClientApp never reads it."""

TOP_LEVEL: Mapping[str, type] = MappingProxyType(
    {
        NodeConfig.SITE_NAME: str,
        COORDINATOR: str,
        NodeConfig.DATA_PATH: str,
        NodeConfig.WORK_PATH: str,
        PRIVATE_KEY: str,
        NodeConfig.MIN_REPORT_CASES: int,
        NodeConfig.MIN_POSITION_CASES: int,
        NodeConfig.MIN_TRAIN_CASES: int,
        NodeConfig.VALIDATION_FRACTION: float,
        NodeConfig.MIN_LESION_MM3: float,
        I_UNDERSTAND: bool,
        NodeConfig.SHARE_LOCAL_MODEL: bool,
        NodeConfig.LOCAL_DP_NOISE_MULTIPLIER: float,
        NodeConfig.LOCAL_DP_CLIPPING_NORM: float,
        RUNTIME_PORT: int,
    }
)
"""A site kit's top-level keys and their TOML types, in the kit template's order; none is read outside a kit."""
OPTIONAL_IN_A_KIT = frozenset(
    {
        NodeConfig.MIN_POSITION_CASES,
        NodeConfig.MIN_TRAIN_CASES,
        NodeConfig.VALIDATION_FRACTION,
        NodeConfig.MIN_LESION_MM3,
        I_UNDERSTAND,
        NodeConfig.SHARE_LOCAL_MODEL,
        NodeConfig.LOCAL_DP_NOISE_MULTIPLIER,
        NodeConfig.LOCAL_DP_CLIPPING_NORM,
    }
)
"""Top-level keys a kit may leave out: the site's disclosure settings then take their defaults
(site_app.disclosure.policy.DEFAULTS; the consent to share the local-only model and local DP are off); every other key of
TOP_LEVEL is required in a kit."""
_KIND = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}

KEYS = {
    "series": ("modalities", "description"),
    "labels": ("seg-segments", "rtstruct-rois"),
    "limits": ("max-voxels", *LIMIT_KEYS),
}
"""The optional tables and the keys each may hold."""


class SiteSettingsError(ValueError):
    """site.toml cannot be used; the message names the file, the key and what was expected."""


@dataclass(frozen=True)
class SiteFile:
    """A parsed site.toml: its top-level keys (type-checked; empty outside a kit), its ingest rules and its limits
    on run settings."""

    top_level: Mapping[str, str | int | float] = field(default_factory=dict)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    limits: Mapping[str, int | float] = field(default_factory=dict)
    """The [limits] on run settings the file sets (keys of models.shared.node_config.LIMIT_KEYS; site_app.settings.limits), checked."""


def read_site_file(path: Path, kit: bool = False) -> SiteFile:
    """Parse and check site.toml; `kit`: every top-level key of TOP_LEVEL is required. Raises SiteSettingsError."""
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SiteSettingsError(f"site settings {path} cannot be read: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SiteSettingsError(f"site settings {path} is not valid TOML: {e}") from e
    top_level = {key: value for key, value in values.items() if key in TOP_LEVEL}
    for key, kind in TOP_LEVEL.items():
        if key not in top_level:
            if kit and key not in OPTIONAL_IN_A_KIT:
                raise SiteSettingsError(
                    f"{path}: `{key}` is missing, expected {_KIND[kind]}; copy it back from the kit you received"
                )
            continue
        value = top_level[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = top_level[key] = float(value)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise SiteSettingsError(f"{path}: `{key}` is {value!r}, expected {_KIND[kind]}")
    tables = {section: table for section, table in values.items() if section not in TOP_LEVEL}
    ingest = _ingest_settings(path, tables)
    limits = {key: value for key, value in tables.get("limits", {}).items() if key in LIMIT_KEYS}
    try:  # the same checks the ClientApp makes of its node config, so a wrong value is found before a run
        policy = DisclosurePolicy.from_node_config(top_level, source=f"{path}: ")
        SiteLimits.from_table(limits, source=f"{path}: ")
    except ValueError as e:
        raise SiteSettingsError(str(e)) from None
    lowered = policy.lowered()
    if lowered and top_level.get(I_UNDERSTAND) is not True:
        raise SiteSettingsError(
            f"{path}: {'; '.join(lowered)}: a disclosure threshold below its default lets fewer cases stand behind"
            f" each number that leaves this site; set `{I_UNDERSTAND} = true` in site.toml to confirm it"
        )
    return SiteFile(top_level=MappingProxyType(top_level), ingest=ingest, limits=MappingProxyType(limits))


def read_site_settings(path: Path | None) -> IngestSettings:
    """The ingest rules in ``path``, or the defaults when ``path`` is None. Raises SiteSettingsError."""
    return IngestSettings() if path is None else read_site_file(path).ingest


def _ingest_settings(path: Path, tables: dict[str, object]) -> IngestSettings:
    for section, table in tables.items():
        if section not in KEYS:
            raise SiteSettingsError(
                f"{path}: unknown key or section {section!r}; valid sections: {', '.join(KEYS)}; valid keys:"
                f" {', '.join(TOP_LEVEL)}"
            )
        if not isinstance(table, dict):
            raise SiteSettingsError(f"{path}: {section} must be a [{section}] table")
        unknown = sorted(set(table) - set(KEYS[section]))
        if unknown:
            raise SiteSettingsError(
                f"{path}: unknown key(s) {', '.join(unknown)} in [{section}]; valid keys:"
                f" {', '.join(KEYS[section])}"
            )
    series, labels, limits = (tables.get(s, {}) for s in KEYS)
    try:
        return IngestSettings(
            modalities=tuple(
                _strings(series.get("modalities", list(DEFAULT_MODALITIES)), "series.modalities")
            ),
            series_description=series.get("description"),
            seg_segments={
                _segment_number(k): _label_value(v, f"labels.seg-segments.{k}")
                for k, v in labels.get(
                    "seg-segments", {str(k): v for k, v in DEFAULT_SEG_SEGMENTS.items()}
                ).items()
            },
            rtstruct_rois={
                str(k): _label_value(v, f"labels.rtstruct-rois.{k}")
                for k, v in labels.get("rtstruct-rois", {}).items()
            },
            max_voxels=_whole_number(limits.get("max-voxels", DEFAULT_MAX_VOXELS), "limits.max-voxels"),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise SiteSettingsError(f"{path}: {e}") from e


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{key} must be a list of strings, e.g. ["CT", "MR"], found {value!r}')
    return value


def _segment_number(key: str) -> int:
    if not key.isdigit() or int(key) < 1:
        raise ValueError(f'labels.seg-segments keys are segment numbers ("1", "2", ...), found {key!r}')
    return int(key)


def _label_value(value: object, key: str) -> int:
    if _whole_number(value, key) not in range(1, 4):
        raise ValueError(
            f"{key} must be a label value 1-3 (1 necrotic core, 2 edema, 3 enhancing), found {value!r}"
        )
    return value  # type: ignore[return-value]


def _whole_number(value: object, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be a whole number, found {value!r}")
    return value
