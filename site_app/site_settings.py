"""A site's own settings file, site.toml: how its export is read. Every key is optional::

    [series]                       # which series of a study is the case's image
    modalities = ["CT", "MR"]      # DICOM Modality values allowed (default CT, MR)
    description = "(?i)t1.*post"   # regular expression searched in SeriesDescription (default: any)

    [labels]
    seg-segments = { "1" = 1, "2" = 2, "3" = 3 }    # DICOM-SEG segment number -> label value (default N -> N)
    rtstruct-rois = { "GTV" = 3, "Edema" = 2 }      # RTSTRUCT ROI name (any case) -> label value (default none)

    [limits]
    max-voxels = 134217728         # larger volumes are refused from their header (default 512^3)
    # and the site's limits on run settings (site_app.site_limits): spacing-mm-min, spacing-mm-max, …

Among the series that pass the rules and that a label references, the largest is chosen.
Label values: 1 necrotic core, 2 edema, 3 enhancing tumor.
"""

import tomllib
from pathlib import Path

from data_prep.ingest_settings import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_MODALITIES,
    DEFAULT_SEG_SEGMENTS,
    IngestSettings,
)
from models.disclosure_wire import LIMIT_KEYS, POLICY_KEYS

KIT_KEYS = ("site-name", "coordinator", "data-path", "work-path", "runtime-port", *POLICY_KEYS)
"""Top-level keys a site kit's site.toml also holds (deploy/kit.py reads them); ignored here."""

KEYS = {
    "series": ("modalities", "description"),
    "labels": ("seg-segments", "rtstruct-rois"),
    "limits": ("max-voxels", *LIMIT_KEYS),  # the run-setting limits are read by site_app.site_limits
}


class SiteSettingsError(ValueError):
    """site.toml cannot be used; the message names the file, the key and what was expected."""


def read_site_settings(path: Path | None) -> IngestSettings:
    """The settings in ``path``, or the defaults when ``path`` is None. Raises SiteSettingsError."""
    if path is None:
        return IngestSettings()
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SiteSettingsError(f"site settings {path} cannot be read: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SiteSettingsError(f"site settings {path} is not valid TOML: {e}") from e
    for section, table in values.items():
        if section in KIT_KEYS:
            continue
        if section not in KEYS:
            raise SiteSettingsError(f"{path}: unknown section [{section}]; valid sections: {', '.join(KEYS)}")
        if not isinstance(table, dict):
            raise SiteSettingsError(f"{path}: {section} must be a [{section}] table")
        unknown = sorted(set(table) - set(KEYS[section]))
        if unknown:
            raise SiteSettingsError(
                f"{path}: unknown key(s) {', '.join(unknown)} in [{section}]; valid keys:"
                f" {', '.join(KEYS[section])}"
            )
    series, labels, limits = (values.get(s, {}) for s in KEYS)
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
