"""One grid rule for labels and predictions (data_prep.volume.on_grid_of): a volume whose voxel centres are the
image's, in another axis order (permuted and/or flipped), is re-indexed losslessly; any other grid is refused with
both files named. In `site check`: a NIfTI label saved in RAS order for an LPS-stored DICOM series is usable."""

import json

import nibabel as nib
import numpy as np
import pytest
from corpus_builder import phantom, write_dicom_case
from typer.testing import CliRunner

from data_prep.errors import CaseError
from data_prep.synth.writers import write_nifti
from data_prep.volume import GRID_TOLERANCE_MM, Volume, on_grid_of
from oncofed_cli import app


def reordered(volume: Volume, axcodes: str) -> Volume:
    """The same voxels stored in another axis order: same centres, another (i, j, k) indexing and affine."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(volume.affine), nib.orientations.axcodes2ornt(axcodes)
    )
    array = nib.orientations.apply_orientation(volume.array, ornt)
    return Volume(array, volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.array.shape))


@pytest.fixture(scope="module")
def case():
    return phantom(0, "LPS")


@pytest.mark.parametrize("axcodes", ["LPS", "RAS", "LAS", "PSR", "IRA", "SPL"])
def test_a_label_in_another_axis_order_is_reindexed_onto_the_image_grid(case, axcodes):
    stored = reordered(case.label, axcodes)
    assert "".join(nib.aff2axcodes(stored.affine)) == axcodes
    on_image = on_grid_of(stored, case.image, "label.nii.gz", "series/")
    np.testing.assert_array_equal(on_image.array, case.label.array)
    np.testing.assert_array_equal(on_image.affine, case.image.affine)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shift", "lie on different grids: voxel centres differ by up to 4 mm"),
        ("spacing", "lie on different grids"),
        ("rotation", "lie on different grids"),
        ("shape", "series/ has shape (20, 23, 18) but label.nii.gz has shape (23, 20, 17)"),
    ],
)
def test_a_label_on_another_grid_is_refused_naming_both_files(case, change, message):
    label = reordered(case.label, "PLS")  # stored differently, and moreover:
    affine = label.affine.copy()
    array = label.array
    if change == "shift":
        affine[:3, 3] += [0.0, 0.0, 4.0]  # one voxel along S
    elif change == "spacing":
        affine[:3, :3] *= 1.01
    elif change == "rotation":
        angle = np.radians(2.0)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine = rotation @ affine
    else:
        array = array[:, :, :-1]
    with pytest.raises(CaseError) as refused:
        on_grid_of(Volume(array, affine), case.image, "label.nii.gz", "series/")
    assert message in str(refused.value)
    assert "label.nii.gz" in str(refused.value) and "series/" in str(refused.value)


def test_rounding_below_the_tolerance_is_accepted(case):
    affine = case.label.affine.copy()
    affine[:3, 3] += GRID_TOLERANCE_MM / 4
    on_image = on_grid_of(reordered(Volume(case.label.array, affine), "RAS"), case.image, "label", "image")
    np.testing.assert_array_equal(on_image.array, case.label.array)


def test_site_check_uses_a_dicom_series_with_a_ras_stored_nifti_label(tmp_path):
    data = tmp_path / "data"
    good = write_dicom_case(data / "series-a", 0, with_seg=False)
    shifted = write_dicom_case(data / "series-b", 1, with_seg=False)
    (data / "labels").mkdir()
    ras = reordered(good.truth.label, "RAS")
    write_nifti(data / "labels" / "a.nii.gz", ras.array, ras.affine)
    off_grid = reordered(shifted.truth.label, "RAS")
    moved = off_grid.affine.copy()
    moved[:3, 3] += [4.0, 0.0, 0.0]
    write_nifti(data / "labels" / "b.nii.gz", off_grid.array, moved)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "case_id,image,label\nras-label,series-a,labels/a.nii.gz\nshifted,series-b,labels/b.nii.gz\n"
    )

    args = [
        "site",
        "check",
        "--data",
        str(data),
        "--work",
        str(tmp_path / "work"),
        "--manifest",
        str(manifest),
        "--format",
        "json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cases = {c["case_id"]: c for c in json.loads(result.stdout)["cases"]}
    assert cases["ras-label"]["status"] == "usable", cases["ras-label"]["reason"]
    assert cases["ras-label"]["source_orientation"] == "LPS"
    expected_ml = {
        str(v): n * 64 / 1000 for v, n in zip(*np.unique(good.truth.label.array, return_counts=True)) if v
    }
    assert cases["ras-label"]["label_volumes_ml"] == pytest.approx(expected_ml)
    assert cases["shifted"]["status"] == "excluded"
    assert "series-b and labels/b.nii.gz lie on different grids" in cases["shifted"]["reason"]
