"""Read one DICOM image series (CT, MR, ...) into a RAS Volume: single-frame slices or an enhanced multi-frame file.

Axes of the returned array: i runs along a DICOM row (the column index; direction = the first three values of
ImageOrientationPatient), j along a DICOM column (the row index; the last three values), k along the slice
normal cross(row, column). Frames are ordered by the projection of ImagePositionPatient on that normal, never
by file name or InstanceNumber, which exporters assign freely.

Affine, in DICOM's LPS first: columns row_cosine * PixelSpacing[1], column_cosine * PixelSpacing[0],
(IPP_last - IPP_first) / (n - 1), translation IPP_first. Then RAS = diag(-1, -1, 1, 1) @ LPS, done here and
nowhere else.

Headers are read first (no pixel data) to check the geometry and the size against the site's voxel limit;
pixel data is decoded file by file afterwards (pydicom's plugins: RLE and deflate built in, JPEG-LS via pyjpegls,
JPEG Lossless/Extended and JPEG 2000 via pylibjpeg).
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from data_prep.errors import CaseError
from data_prep.ingest_settings import DEFAULT_MAX_VOXELS
from data_prep.volume import Volume, check_voxel_limit, checked_affine

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Negates x and y: DICOM patient coordinates are LPS, a Volume's are RAS. The matrix is its own inverse."""

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference allowed between the ImageOrientationPatient values of two frames of one series."""

SLICE_GAP_RELATIVE_TOLERANCE = 1e-2
"""Largest deviation of any slice gap from the median gap, as a fraction of it (highdicom uses the same 1 %)."""

MISSING_SLICE_GAP_FACTOR = 1.5
"""A gap this many times the median gap (or more) means slices are missing, not merely uneven."""

TILT_TOLERANCE_DEGREES = 0.05
"""Largest angle between the slice-to-slice step and the slice normal; more is a tilted (sheared) grid."""


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A series read into a Volume; ``source_frames[k]`` is the (SOPInstanceUID, frame number from 1) of slice k."""

    volume: Volume
    source_frames: tuple[tuple[str, int], ...]
    series_instance_uid: str
    modality: str
    folder: Path
    """Common folder of the series' files, used in messages."""

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(uid for uid, _ in self.source_frames)


@dataclass(frozen=True, eq=False)
class _Frame:
    file: Path
    number: int  # 1-based frame number within the file
    of: int  # frames in the file
    sop_instance_uid: str
    position_lps: np.ndarray
    orientation: np.ndarray  # the six ImageOrientationPatient values
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    slope: float
    intercept: float


def series_geometry(
    positions_lps: np.ndarray,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    source: Path | str,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sort frames along their normal and build the RAS affine, from header values only (no files, no pixels).

    ``positions_lps``: (n, 3) ImagePositionPatient of each frame, mm; ``orientation``: the six
    ImageOrientationPatient values; ``pixel_spacing``: (row spacing, column spacing) in mm; ``names[f]`` names
    frame f in messages (its file). Returns ``(order, affine)``: frame ``order[k]`` becomes slice k;
    ``affine`` is 4x4 voxel (i, j, k) -> RAS mm. Raises CaseError naming ``source`` for fewer than two frames,
    duplicated, missing or unevenly spaced slices, and gantry tilt.
    """
    names = list(names) if names is not None else [f"frame {f + 1}" for f in range(len(positions_lps))]
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    distances = positions_lps @ normal
    order = np.argsort(distances, kind="stable")
    positions, distances = positions_lps[order], distances[order]
    n = len(order)
    if n < 2:
        raise CaseError(f"{source}: only {n} slice: a 2-D image, where a 3-D volume is expected")
    gaps = np.diff(distances)
    if gaps.min() <= 1e-3:
        k = int(np.argmin(gaps))
        raise CaseError(
            f"{source}: duplicated slice at {distances[k]:.3f} mm along the slice normal: {names[order[k]]} and"
            f" {names[order[k + 1]]} (a slice exported twice, or two acquisitions mixed in one series)"
        )
    median = float(np.median(gaps))
    if gaps.max() >= MISSING_SLICE_GAP_FACTOR * median:
        k = int(np.argmax(gaps))
        raise CaseError(
            f"{source}: missing slice(s): gap of {gaps[k]:.3f} mm between the slices at {distances[k]:.3f} and"
            f" {distances[k + 1]:.3f} mm along the normal ({names[order[k]]}, {names[order[k + 1]]}), where"
            f" slices are {median:.3f} mm apart (about {round(gaps[k] / median) - 1} missing); re-export the series"
        )
    if np.abs(gaps - median).max() > SLICE_GAP_RELATIVE_TOLERANCE * median:
        raise CaseError(
            f"{source}: uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm (tolerance"
            f" {SLICE_GAP_RELATIVE_TOLERANCE:.0%}); resample the series to even spacing before export"
        )
    step = (positions[-1] - positions[0]) / (n - 1)
    tilt = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), 0.0, 1.0))))
    if tilt > TILT_TOLERANCE_DEGREES:
        in_plane = float(np.linalg.norm(step - (step @ normal) * normal))
        raise CaseError(
            f"{source}: gantry tilt of {tilt:.2f} degrees: each slice is shifted {in_plane:.3f} mm within its"
            " plane; tilted series are not resampled here, reslice it (e.g. dcm2niix's tilt correction) first"
        )
    lps = np.eye(4)
    lps[:3, 0] = row * float(pixel_spacing[1])
    lps[:3, 1] = col * float(pixel_spacing[0])
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return order, checked_affine(LPS_TO_RAS @ lps, source)


def read_dicom_series(files: Sequence[Path], max_voxels: int = DEFAULT_MAX_VOXELS) -> DicomSeries:
    """Read the files of one series into a float32 Volume of modality values (RescaleSlope/Intercept applied).

    Raises CaseError naming the series folder (and file) when the files are not one consistent grayscale
    series, when the geometry is unusable (see ``series_geometry``), when the volume has more than
    ``max_voxels`` voxels (checked before any pixel data is read), or when pixel data cannot be decoded.
    """
    if not files:
        raise CaseError("empty DICOM series: no files given")
    paths = [Path(f) for f in files]
    folder = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    source = folder if len(paths) > 1 else paths[0]  # what messages name
    headers = _unique_instances([(p, _read(p, stop_before_pixels=True)) for p in paths], source)
    first_path, first = headers[0]
    for path, ds in headers:
        for keyword in ("SeriesInstanceUID", "Rows", "Columns", "SamplesPerPixel"):
            if _required(ds, keyword, path) != _required(first, keyword, first_path):
                raise CaseError(
                    f"{source}: not one consistent series: {keyword} is {ds.get(keyword)} in {path.name}"
                    f" but {first.get(keyword)} in {first_path.name}"
                )
    if int(first.SamplesPerPixel) != 1:
        raise CaseError(
            f"{first_path}: colour image ({first.get('PhotometricInterpretation')}, "
            f"{first.SamplesPerPixel} samples per pixel); a grayscale CT or MR series is expected"
        )
    frames = [frame for path, ds in headers for frame in _frames(ds, path)]
    rows, columns = int(first.Rows), int(first.Columns)
    check_voxel_limit((columns, rows, len(frames)), max_voxels, source)
    for frame in frames:
        if not np.allclose(frame.orientation, frames[0].orientation, atol=ORIENTATION_TOLERANCE):
            raise CaseError(
                f"{source}: not one consistent series: ImageOrientationPatient is"
                f" {frame.orientation.round(5).tolist()} in {_name(frame)} but"
                f" {frames[0].orientation.round(5).tolist()} in {_name(frames[0])}"
            )
        if not np.allclose(frame.pixel_spacing, frames[0].pixel_spacing, rtol=1e-4):
            raise CaseError(
                f"{source}: not one consistent series: PixelSpacing is {list(frame.pixel_spacing)} in"
                f" {_name(frame)} but {list(frames[0].pixel_spacing)} in {_name(frames[0])}"
            )
    order, affine = series_geometry(
        np.array([f.position_lps for f in frames]),
        frames[0].orientation,
        frames[0].pixel_spacing,
        source,
        [_name(f) for f in frames],
    )
    slice_of = np.empty(len(frames), dtype=int)
    slice_of[order] = np.arange(len(frames))  # frame index -> k
    by_file: dict[Path, list[int]] = {}
    for index, frame in enumerate(frames):
        by_file.setdefault(frame.file, []).append(index)
    array = np.empty((columns, rows, len(frames)), dtype=np.float32)
    for path, indices in by_file.items():  # one file's pixel data in memory at a time
        pixels = _pixels(_read(path, stop_before_pixels=False), path, len(indices), rows, columns)
        for index in indices:
            frame = frames[index]
            values = pixels[frame.number - 1].astype(np.float32) * np.float32(frame.slope) + np.float32(
                frame.intercept
            )
            array[:, :, slice_of[index]] = values.T
    return DicomSeries(
        volume=Volume(array=array, affine=affine),
        source_frames=tuple((frames[f].sop_instance_uid, frames[f].number) for f in order),
        series_instance_uid=str(first.SeriesInstanceUID),
        modality=str(first.get("Modality", "")),
        folder=folder,
    )


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent). Raises ValueError naming the value when it is not a whole number."""
    value = ds.get("NumberOfFrames")
    try:
        return int(value or 1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"NumberOfFrames {str(value)!r} is not a number") from e


def _read(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except PermissionError as e:
        raise CaseError(f"{path}: permission denied: this user cannot read the file") from e
    except FileNotFoundError as e:
        raise CaseError(f"{path}: file vanished since the folder was scanned") from e
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
        raise CaseError(f"{path}: cannot read as DICOM: {e}") from e


def _unique_instances(headers: list[tuple[Path, Dataset]], folder: Path) -> list[tuple[Path, Dataset]]:
    """Drop exact copies of an instance (same SOPInstanceUID twice: exporters sometimes write a file twice)."""
    unique: dict[str, tuple[Path, Dataset]] = {}
    for path, ds in headers:
        uid = str(_required(ds, "SOPInstanceUID", path))
        if uid in unique:
            log.info(
                "%s: %s is a second copy of %s (same SOPInstanceUID); using one",
                folder,
                path.name,
                unique[uid][0].name,
            )
            continue
        unique[uid] = (path, ds)
    return list(unique.values())


def _required(ds: Dataset, keyword: str, path: Path | str):
    value = ds.get(keyword)
    if value is None or value == "":
        raise CaseError(f"{path}: required attribute {keyword} is missing or empty")
    return value


def _frames(ds: Dataset, path: Path) -> list[_Frame]:
    """Header geometry of every frame: classic single-frame attributes, or enhanced functional groups."""
    uid = str(ds.SOPInstanceUID)
    try:
        n_frames = frame_count(ds)
    except ValueError as e:
        raise CaseError(f"{path}: {e}") from e
    if "PerFrameFunctionalGroupsSequence" not in ds:
        if n_frames > 1:
            raise CaseError(
                f"{path}: multi-frame image ({n_frames} frames) without per-frame positions"
                " (PerFrameFunctionalGroupsSequence missing); cannot place its frames in space"
            )
        return [
            _Frame(
                path,
                1,
                1,
                uid,
                _floats(ds, "ImagePositionPatient", path, 3),
                _floats(ds, "ImageOrientationPatient", path, 6),
                tuple(_floats(ds, "PixelSpacing", path, 2)),
                *_rescale(ds),
            )
        ]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n_frames:
        raise CaseError(f"{path}: {len(per_frame)} per-frame functional groups for NumberOfFrames {n_frames}")
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    frames = []
    for number, groups in enumerate(per_frame, start=1):
        where = f"{path} frame {number}"
        position, orientation, measures = (
            _functional_group(name, groups, shared, where)
            for name in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
        )
        transform = next(
            (
                g.PixelValueTransformationSequence[0]
                for g in (groups, shared)
                if "PixelValueTransformationSequence" in g
            ),
            Dataset(),
        )
        frames.append(
            _Frame(
                path,
                number,
                n_frames,
                uid,
                _floats(position, "ImagePositionPatient", where, 3),
                _floats(orientation, "ImageOrientationPatient", where, 6),
                tuple(_floats(measures, "PixelSpacing", where, 2)),
                *_rescale(transform),
            )
        )
    return frames


def _functional_group(sequence: str, per_frame: Dataset, shared: Dataset, where: str) -> Dataset:
    """The first item of ``sequence`` in the frame's own functional groups, else in the shared ones."""
    for groups in (per_frame, shared):
        if sequence in groups and len(groups[sequence].value):
            return groups[sequence].value[0]
    raise CaseError(f"{where}: no {sequence} in its functional groups (enhanced multi-frame geometry)")


def _floats(ds: Dataset, keyword: str, where: Path | str, count: int) -> np.ndarray:
    value = _required(ds, keyword, where)
    try:
        numbers = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as e:
        raise CaseError(f"{where}: {keyword} is not numeric: {value!r}") from e
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise CaseError(f"{where}: {keyword} must be {count} finite numbers, found {value!r}")
    return numbers


def _rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) mapping stored values to modality values (HU for CT); identity when absent."""
    slope = float(ds.get("RescaleSlope") or 1.0)
    intercept = float(ds.get("RescaleIntercept") or 0.0)
    return slope, intercept


def _pixels(ds: Dataset, path: Path, n_frames: int, rows: int, columns: int) -> np.ndarray:
    """Decoded stored values, (frames, rows, columns)."""
    if "ModalityLUTSequence" in ds:
        raise CaseError(
            f"{path}: uses a Modality LUT Sequence instead of RescaleSlope/Intercept; not supported"
        )
    syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
    try:
        pixels = ds.pixel_array
    except AttributeError as e:
        raise CaseError(f"{path}: no pixel data (the PixelData element is missing)") from e
    except (ValueError, RuntimeError, NotImplementedError, EOFError, OSError) as e:
        name = getattr(syntax, "name", syntax)
        raise CaseError(f"{path}: cannot decode the pixel data ({name}): {e}") from e
    pixels = pixels[None] if pixels.ndim == 2 else pixels
    if pixels.shape != (n_frames, rows, columns):
        raise CaseError(
            f"{path}: decoded pixel data has shape {pixels.shape}, expected {(n_frames, rows, columns)}"
        )
    return pixels


def _name(frame: _Frame) -> str:
    return frame.file.name if frame.of == 1 else f"{frame.file.name} frame {frame.number}"
