"""Read one NIfTI file (.nii or .nii.gz, NIfTI-1 or -2) into a Volume, checking its header before its voxels;
write a label map.

nibabel's ``img.affine`` maps voxel index to RAS mm (sform if set, else qform), so it is kept as stored; the array
keeps the stored axis order. One 3-D volume per file: a trailing axis of length 1 (x, y, z, 1) is dropped, a real
4th dimension (time, channels) is refused.
"""

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from data_prep.errors import CaseError
from data_prep.ingest_settings import DEFAULT_MAX_VOXELS
from data_prep.volume import Volume, check_voxel_limit, checked_affine
from models.shared.atomic import atomic_path


def read_nifti(path: Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """Load ``path`` as a float32 (i, j, k) array with its RAS affine; scaling (scl_slope/inter) is applied.

    Label maps come back as float32 too; ``loading.load_case`` checks and casts them to uint8.
    Raises CaseError for an unreadable file, a shape that is not one 3-D volume, more than ``max_voxels`` voxels
    (from the header, before reading voxels), an unknown orientation, a bad affine, or non-finite voxels.
    """
    img = _load_header(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseError(
            f"{path}: expected one 3-D volume, found a {len(shape)}-D image of shape {img.shape};"
            " export one 3-D volume per case"
        )
    if min(shape) < 2:
        raise CaseError(f"{path}: shape {shape} is a 2-D image, where a 3-D volume is expected")
    check_voxel_limit(shape, max_voxels, path)
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind == "c":
        raise CaseError(f"{path}: voxel type {img.get_data_dtype()} (RGB or complex) is not a scalar image")
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise CaseError(
            f"{path}: no orientation in the header (sform_code and qform_code are both 0), so where"
            " the voxels lie in the patient is unknown; re-export with the scanner orientation"
        )
    affine = checked_affine(img.affine, path)
    try:
        array = img.get_fdata(dtype=np.float32).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated or corrupt .gz, short file
        raise CaseError(f"{path}: cannot read voxel data (truncated or corrupt file?): {e}") from e
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        what = "all voxels are" if bad == array.size else f"{bad:,} of {array.size:,} voxels are"
        raise CaseError(f"{path}: {what} NaN or infinite")
    return Volume(array=array, affine=affine)


def _load_header(path: Path) -> nib.Nifti1Image:
    try:
        with open(path, "rb") as f:  # nibabel reports an unreadable file as "Could not read file"
            if not f.read(1):
                raise CaseError(f"{path}: empty file (0 bytes)")
    except PermissionError as e:
        raise CaseError(f"{path}: permission denied: this user cannot read the file") from e
    except FileNotFoundError as e:
        raise CaseError(f"{path}: file not found (moved or deleted since the folder was scanned?)") from e
    try:
        img = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError, EOFError, ValueError, zlib.error) as e:
        raise CaseError(f"{path}: cannot read as NIfTI (truncated, corrupt, or not a NIfTI file): {e}") from e
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CaseError(f"{path}: is a {type(img).__name__}, not a NIfTI image")
    return img


def write_label_nifti(path: Path, label: Volume) -> None:
    """Write a uint8 label map with its affine as sform and qform (code "scanner", mm), atomically.

    ``path`` ends in .nii.gz (compressed) or .nii. The sform holds the affine in float32, as NIfTI stores it.
    """
    img = nib.Nifti1Image(np.asarray(label.array, dtype=np.uint8), label.affine)
    img.header.set_sform(label.affine, code="scanner")
    img.header.set_qform(label.affine, code="scanner")
    img.header.set_xyzt_units(xyz="mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
