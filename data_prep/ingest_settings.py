"""How a site's files become cases: series selection rules, label mappings and the memory limit.

A site writes them in its site.toml (``site_app.settings.site_file`` parses it); the defaults fit a site that exports
CT or MR series with DICOM-SEG labels numbered like our label convention (segment N is label value N).
Settings travel inside cache keys and the inventory, so they are plain, hashable values with a dict form.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from models.shared.labels import LABEL_NAMES

DEFAULT_MODALITIES = ("CT", "MR")
"""DICOM Modality values of series that may be a case's image."""

DEFAULT_MAX_VOXELS = 512**3
"""Largest volume read, in voxels (512³ float32 is 512 MiB); larger ones are refused from their header alone."""

DEFAULT_SEG_SEGMENTS = MappingProxyType({value: value for value in LABEL_NAMES if value})
"""DICOM-SEG segment number -> label value: segment N is label value N for the tumor labels 1-3."""


@dataclass(frozen=True)
class IngestSettings:
    """Rules for reading one site's export; see site_app/settings/site_file.py for their site.toml names."""

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    series_description: str | None = None
    """Regular expression searched in SeriesDescription; a case's image series must match it (None: any)."""
    seg_segments: Mapping[int, int] = field(default_factory=lambda: DEFAULT_SEG_SEGMENTS)
    rtstruct_rois: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """RTSTRUCT ROI name (compared case-insensitively) -> label value; ROIs not named here are not labels."""
    max_voxels: int = DEFAULT_MAX_VOXELS

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("modalities must name at least one DICOM Modality, e.g. ['CT', 'MR']")
        if self.series_description is not None:
            try:
                re.compile(self.series_description)
            except re.error as e:
                raise ValueError(
                    f"series description pattern {self.series_description!r} is not a regular expression: {e}"
                ) from e
        for name, mapping in (("seg segment", self.seg_segments), ("rtstruct ROI", self.rtstruct_rois)):
            unknown = sorted(v for v in mapping.values() if v not in LABEL_NAMES or v == 0)
            if unknown:
                raise ValueError(
                    f"{name} mapping gives label values {unknown}; label values are 1-3"
                    f" ({', '.join(f'{k} {n}' for k, n in LABEL_NAMES.items() if k)})"
                )
        if self.max_voxels < 1:
            raise ValueError(f"max voxels must be a positive number of voxels, got {self.max_voxels}")
        object.__setattr__(self, "modalities", tuple(m.upper() for m in self.modalities))
        object.__setattr__(self, "seg_segments", MappingProxyType(dict(sorted(self.seg_segments.items()))))
        rois = {name.casefold(): value for name, value in sorted(self.rtstruct_rois.items())}
        object.__setattr__(self, "rtstruct_rois", MappingProxyType(rois))

    def matches_description(self, description: str) -> bool:
        return self.series_description is None or re.search(self.series_description, description) is not None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (inventory, cache keys); ``from_dict`` reverses it."""
        return {
            "modalities": list(self.modalities),
            "series_description": self.series_description,
            "seg_segments": {str(k): v for k, v in self.seg_segments.items()},
            "rtstruct_rois": dict(self.rtstruct_rois),
            "max_voxels": self.max_voxels,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "IngestSettings":
        return cls(
            modalities=tuple(values["modalities"]),  # type: ignore[arg-type]
            series_description=values["series_description"],  # type: ignore[arg-type]
            seg_segments={int(k): int(v) for k, v in values["seg_segments"].items()},  # type: ignore[union-attr]
            rtstruct_rois={str(k): int(v) for k, v in values["rtstruct_rois"].items()},  # type: ignore[union-attr]
            max_voxels=int(values["max_voxels"]),  # type: ignore[arg-type]
        )


DEFAULT_INGEST = IngestSettings()
"""The settings of a site without site.toml."""
