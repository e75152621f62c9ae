"""Read one NIfTI file (.nii or .nii.gz) into a Volume.

nibabel's ``img.affine`` already maps voxel index to RAS mm (sform if set, else qform), so it is kept as stored;
the array keeps the stored axis order. Only 3-D volumes are accepted for now.
"""

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from data_prep.errors import CaseError
from data_prep.volume import Volume, checked_affine


def read_nifti(path: Path) -> Volume:
    """Load ``path`` as a float32 (i, j, k) array with its RAS affine; scaling (scl_slope/inter) is applied.

    Label maps come back as float32 too; ``discovery.load_case`` checks and casts them to uint8.
    Raises CaseError for an unreadable file, a non-3-D image or a bad affine.
    """
    try:
        img = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError, EOFError, ValueError) as e:
        raise CaseError(f"{path}: cannot read as NIfTI: {e}") from e
    if len(img.shape) != 3:
        raise CaseError(
            f"{path}: expected one 3-D volume, found a {len(img.shape)}-D image of shape {img.shape}"
        )
    affine = checked_affine(img.affine, path)
    try:
        array = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated or corrupt .gz, short file
        raise CaseError(f"{path}: cannot read voxel data: {e}") from e
    return Volume(array=array, affine=affine)
