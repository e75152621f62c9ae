"""Cases listed in a CSV manifest, for data folders that are not organised by case.

Columns ``case_id,image,label`` (a header row; more columns are ignored), paths relative to the data folder:
``image`` is a NIfTI file, a DICOM file (a single-file series: enhanced multi-frame) or a folder holding one DICOM
image series; ``label`` a NIfTI label map, a DICOM-SEG or an RTSTRUCT file. A row that cannot be a case is
excluded with its reason; a manifest that cannot be read at all is a SiteDataError (a usage error).
For prediction (``require_label=False``) the label column may be absent or a cell empty.
"""

import csv
from pathlib import Path, PurePath

import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.dicom.index import LABEL_KINDS, index_dicom_files
from data_prep.discovery import NIFTI_SUFFIXES, CaseFiles, Discovery, Exclusion, checked_site_dir
from data_prep.errors import CaseError, SiteDataError
from data_prep.file_walk import walk_files
from data_prep.ingest_settings import DEFAULT_INGEST, IngestSettings

COLUMNS = ("case_id", "image", "label")


def read_manifest(
    manifest: Path, site_dir: Path, settings: IngestSettings = DEFAULT_INGEST, *, require_label: bool = True
) -> Discovery:
    """The cases a manifest lists. Raises SiteDataError for a missing or malformed manifest or data folder."""
    site_dir = checked_site_dir(site_dir)
    rows = _rows(Path(manifest), COLUMNS if require_label else COLUMNS[:2])
    found = Discovery()
    first_row: dict[str, int] = {}
    for line, row in rows:
        case_id = (row.get("case_id") or "").strip()
        where = f"{manifest} line {line}"
        if not case_id:
            found.excluded.append(Exclusion(f"line {line}", f"{where}: empty case_id"))
            continue
        if case_id in first_row:
            found.excluded.append(
                Exclusion(
                    f"{case_id} (line {line})",
                    f"{where}: case id {case_id!r} is already used on line"
                    f" {first_row[case_id]}; case ids must be unique",
                )
            )
            continue
        first_row[case_id] = line
        try:
            image_files, image_format, modality = _image(site_dir, row.get("image") or "", where, settings)
            unlabelled = not require_label and not (row.get("label") or "").strip()
            label, label_format = (
                (None, None) if unlabelled else _label(site_dir, row.get("label") or "", where)
            )
        except CaseError as e:
            found.excluded.append(Exclusion(case_id, str(e)))
            continue
        found.cases.append(CaseFiles(case_id, image_files, label, image_format, label_format, modality))
    found.cases.sort(key=lambda c: c.case_id)
    return found


def _rows(manifest: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise SiteDataError(
                    f"manifest {manifest}: missing column(s) {', '.join(missing)}; the first line"
                    f" must name the columns {','.join(columns)} (found {reader.fieldnames})"
                )
            return [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SiteDataError(f"manifest {manifest} cannot be read: {e}") from e


def _inside(site_dir: Path, relative: str, column: str, where: str) -> Path:
    """``site_dir / relative`` after checking the path is relative, stays inside the data folder and exists."""
    if not relative.strip():
        raise CaseError(f"{where}: empty {column} path")
    if PurePath(relative).is_absolute() or ".." in PurePath(relative).parts:
        raise CaseError(
            f"{where}: {column} path {relative!r} must be relative to the data folder and stay inside it"
        )
    path = site_dir / relative.strip()
    if not path.exists():
        raise CaseError(f"{where}: {column} {path} does not exist")
    return path


def _image(
    site_dir: Path, relative: str, where: str, settings: IngestSettings
) -> tuple[tuple[Path, ...], str, str | None]:
    path = _inside(site_dir, relative, "image", where)
    if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
        return (path,), "nifti", None
    files = walk_files(path)[0] if path.is_dir() else [path]
    index = index_dicom_files(files)
    series = [s for s in index.series.values() if s.modality in settings.modalities]
    if len(series) != 1:
        found = ", ".join(f"{s.modality} '{s.description}'" for s in index.series.values()) or "none"
        raise CaseError(
            f"{path}: expected one {'/'.join(settings.modalities)} DICOM image series, found"
            f" {len(series)} (image series: {found}{_first_problem(index)})"
        )
    return tuple(sorted(series[0].files)), "dicom", series[0].modality


def _label(site_dir: Path, relative: str, where: str) -> tuple[Path, str]:
    path = _inside(site_dir, relative, "label", where)
    if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
        return path, "nifti"
    try:
        modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise CaseError(
            f"{path}: the label is neither a NIfTI file (.nii, .nii.gz) nor a readable DICOM file: {e}"
        ) from e
    if modality not in LABEL_KINDS:
        raise CaseError(
            f"{path}: the label is a DICOM {modality or 'object without Modality'}, not a DICOM-SEG or"
            " RTSTRUCT"
        )
    return path, LABEL_KINDS[modality]


def _first_problem(index) -> str:
    return f"; {index.ignored[0].path}: {index.ignored[0].reason}" if index.ignored else ""
