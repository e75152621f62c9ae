"""The site inventory: every case found, usable or excluded with one specific reason, and every unused file.

Written as ``<work>/inventory.json`` by ``oncofed site check`` (or by the site before its first round); training
uses only its usable cases. It holds header facts and a few per-case numbers (shape, spacing, intensity range,
label volumes), never pixel data or DICOM identifiers (names, ids, UIDs, dates); paths and reasons are relative
to the data folder. It stays in the site's work folder: only ``site_aggregate`` may leave the site.

Per case: ``shape`` and ``spacing_mm`` in RAS axis order at native resolution, ``source_orientation`` the axis
codes of the volume as stored (e.g. ``LPS``, ``PSR``), ``intensity_range`` [min, max] in stored units (HU for
CT), ``label_volumes_ml`` label value -> mL.
"""

import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from data_prep.discovery import CaseFiles, Discovery
from data_prep.errors import CaseError
from data_prep.ingest_settings import IngestSettings
from data_prep.loading import load_case
from models.shared.atomic import atomic_write_json
from models.shared.wire import Overview

log = logging.getLogger(__name__)

INVENTORY_FILE = "inventory.json"
FORMAT = "oncofed-inventory/1"

MAX_REMARKS = 5
"""Most reader warnings kept per case (they repeat per file)."""


@dataclass
class CaseRecord:
    case_id: str
    status: Literal["usable", "excluded"]
    reason: str | None
    image_format: str | None = None
    label_format: str | None = None
    image: str | None = None
    """The image file, or the folder holding the series' files; relative to the data folder."""
    image_files: list[str] = field(default_factory=list)
    label: str | None = None
    modality: str | None = None
    shape: list[int] | None = None
    spacing_mm: list[float] | None = None
    source_orientation: str | None = None
    intensity_range: list[float] | None = None
    label_volumes_ml: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)
    """Remarks that did not exclude the case."""


@dataclass
class Inventory:
    data: str
    """The data folder, absolute."""
    settings: IngestSettings
    manifest: str | None = None
    cases: list[CaseRecord] = field(default_factory=list)
    ignored_files: list[dict[str, str]] = field(default_factory=list)
    """{"path", "reason"} of each file that is no part of any case."""

    @property
    def usable(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.status == "usable"]

    def summary(self) -> dict[str, object]:
        usable = self.usable
        spacings = [s for c in usable for s in c.spacing_mm or []]
        sizes = [n for c in usable for n in c.shape or []]
        return {
            "n_cases": len(self.cases),
            "n_usable": len(usable),
            "n_excluded": len(self.cases) - len(usable),
            "n_ignored_files": len(self.ignored_files),
            "spacing_mm_range": [min(spacings), max(spacings)] if spacings else None,
            "size_vox_range": [min(sizes), max(sizes)] if sizes else None,
        }

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "data": self.data,
            "manifest": self.manifest,
            "settings": self.settings.as_dict(),
            "summary": self.summary(),
            "cases": [asdict(c) for c in self.cases],
            "ignored_files": self.ignored_files,
        }

    @classmethod
    def from_json(cls, values: dict) -> "Inventory":
        if values.get("format") != FORMAT:
            raise ValueError(f"format {values.get('format')!r}, expected {FORMAT!r}")
        return cls(
            data=values["data"],
            settings=IngestSettings.from_dict(values["settings"]),
            manifest=values["manifest"],
            cases=[CaseRecord(**c) for c in values["cases"]],
            ignored_files=values["ignored_files"],
        )

    def usable_cases(self) -> list[CaseFiles]:
        """CaseFiles of the usable cases, paths resolved against the data folder."""
        root = Path(self.data)
        return [
            CaseFiles(
                c.case_id,
                tuple(root / f for f in c.image_files),
                root / str(c.label),
                c.image_format,
                c.label_format,
                c.modality,
            )  # type: ignore[arg-type]
            for c in self.usable
        ]


def build_inventory(
    found: Discovery,
    data_dir: Path,
    settings: IngestSettings,
    manifest: Path | None = None,
    on_case: Callable[[], None] | None = None,
) -> Inventory:
    """Load every candidate case (all checks that need voxels) and record it; ``on_case`` after each one."""
    data_dir = Path(data_dir).absolute()
    inventory = Inventory(data=str(data_dir), settings=settings, manifest=str(manifest) if manifest else None)
    for exclusion in found.excluded:
        inventory.cases.append(
            CaseRecord(exclusion.case_id, "excluded", _relative(exclusion.reason, data_dir))
        )
    for case in found.cases:
        record = inspect_case(case, data_dir, settings)
        record.problems[:0] = [_relative(n, data_dir) for n in found.notes.get(case.case_id, [])]
        inventory.cases.append(record)
        if on_case is not None:
            on_case()
    inventory.cases.sort(key=lambda c: c.case_id)
    inventory.ignored_files = [
        {"path": _relative(str(p.path), data_dir), "reason": _relative(p.reason, data_dir)}
        for p in sorted(found.ignored, key=lambda p: p.path)
    ]
    return inventory


def inspect_case(case: CaseFiles, data_dir: Path, settings: IngestSettings) -> CaseRecord:
    """Load one case and describe it; any failure excludes it with its reason, never stops the inventory."""
    files = [_relative(str(f), data_dir) for f in case.image]
    image = files[0] if len(files) == 1 else _relative(os.path.commonpath(case.image), data_dir)
    record = CaseRecord(
        case.case_id,
        "usable",
        None,
        case.image_format,
        case.label_format,
        image,
        files,
        _relative(str(case.label), data_dir),
        case.modality,
    )
    try:
        with warnings.catch_warnings(record=True) as caught:  # readers' warnings become the case's remarks
            warnings.simplefilter("always")
            image, label = load_case(case, settings)
        record.problems = list(dict.fromkeys(_relative(str(w.message), data_dir) for w in caught))[
            :MAX_REMARKS
        ]
    except CaseError as e:
        record.status, record.reason = "excluded", _relative(str(e), data_dir)
        return record
    except Exception as e:  # one case's unexpected failure must not stop the site
        log.exception("case %s: unexpected error", case.case_id)
        record.status = "excluded"
        record.reason = _relative(f"unexpected error reading the case: {type(e).__name__}: {e}", data_dir)
        return record
    voxel_ml = float(np.prod(image.spacing_mm)) / 1000.0
    values, counts = np.unique(label.array, return_counts=True)
    record.shape = list(image.ras_shape)
    record.spacing_mm = [round(s, 4) for s in image.ras_spacing_mm]
    record.source_orientation = image.orientation
    record.intensity_range = [float(image.array.min()), float(image.array.max())]
    record.label_volumes_ml = {
        str(int(v)): round(float(n) * voxel_ml, 3) for v, n in zip(values, counts) if v
    }
    return record


def write_inventory(inventory: Inventory, work: Path) -> Path:
    """Write ``<work>/inventory.json`` atomically (models.shared.atomic), keeping the inventory's own key order."""
    target = work / INVENTORY_FILE
    atomic_write_json(target, inventory.to_json(), indent=1, sort_keys=False)
    return target


def read_inventory(work: Path) -> Inventory | None:
    """The inventory in ``work``, or None when there is none or it cannot be read (it is then rebuilt)."""
    path = work / INVENTORY_FILE
    if not path.is_file():
        return None
    try:
        return Inventory.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning(
            "ignoring the inventory %s, it cannot be read (%s: %s); it will be rebuilt",
            path,
            type(e).__name__,
            e,
        )
        return None


def site_aggregate(inventory: Inventory) -> dict[str, int]:
    """The site's case counts (models.shared.wire.Overview): the only numbers about its data that may leave it, and
    only as site_app.disclosure.policy.released_overview lets them (no spacing or size ranges: they are the
    values of single cases)."""
    summary = inventory.summary()
    return {
        Overview.N_CASES_USABLE: int(summary["n_usable"]),
        Overview.N_CASES_EXCLUDED: int(summary["n_excluded"]),
    }


def _relative(text: str, data_dir: Path) -> str:
    """``text`` with the data folder's path removed from the paths it names."""
    return text.replace(f"{data_dir}{os.sep}", "").replace(str(data_dir), ".")
