"""DICOM readers on unusual but valid exports: transfer syntaxes, storage, enhanced multi-frame, SEG mappings and
RTSTRUCT contours."""

import numpy as np
import pydicom
import pytest
from corpus_builder import (
    compress_series,
    rewrite,
    square_contour,
    write_dicom_case,
    write_enhanced_case,
    write_rtstruct,
    write_seg_with_segments,
)
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from data_prep.dicom.rtstruct import polygon_mask, read_rtstruct
from data_prep.dicom.seg_reader import read_dicom_seg
from data_prep.dicom.series import read_dicom_series
from data_prep.errors import CaseError
from data_prep.ingest_settings import DEFAULT_SEG_SEGMENTS


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian],
    ids=lambda s: s.name,
)
def test_encoded_series_read_back_to_the_same_values(tmp_path, syntax):
    spacing = (
        (2.0, 2.0, 8.0) if syntax == JPEG2000Lossless else (4.0, 4.0, 4.0)
    )  # OpenJPEG needs >= 32 pixels
    case = write_dicom_case(tmp_path / "case", 0, spacing_mm=spacing)
    plain = read_dicom_series(case.slices)
    compress_series(case.slices, syntax)
    assert pydicom.dcmread(case.slices[0]).file_meta.TransferSyntaxUID == syntax
    encoded = read_dicom_series(list(reversed(case.slices)))
    np.testing.assert_array_equal(encoded.volume.array, plain.volume.array)
    np.testing.assert_array_equal(encoded.volume.affine, plain.volume.affine)


def test_unsigned_storage_and_per_slice_rescale_give_the_same_modality_values(tmp_path):
    case = write_dicom_case(tmp_path / "case", 1)
    signed = read_dicom_series(case.slices).volume.array

    def to_unsigned(ds, k):
        stored = ds.pixel_array.astype(np.int32) + 32768  # int16 -> uint16
        slope = float(ds.RescaleSlope) * (1 + k % 2)  # odd slices: twice the slope, half the stored values
        stored = stored // (1 + k % 2) if k % 2 else stored
        ds.PixelRepresentation = 0
        ds.PixelData = stored.astype("<u2").tobytes()
        ds.RescaleIntercept = f"{float(ds.RescaleIntercept) - 32768 * float(ds.RescaleSlope):.4f}"
        ds.RescaleSlope = f"{slope:g}"

    for k, path in enumerate(case.slices):
        rewrite(path, lambda ds, k=k: to_unsigned(ds, k))
    unsigned = read_dicom_series(case.slices).volume.array
    np.testing.assert_allclose(unsigned, signed, atol=float(case.datasets[0].RescaleSlope))


def test_enhanced_multiframe_image_and_its_seg(tmp_path):
    classic = write_dicom_case(tmp_path / "classic", 2)
    enhanced = write_enhanced_case(tmp_path / "enhanced", 2)
    series = read_dicom_series(enhanced.slices)
    assert len(series.source_frames) == enhanced.truth.image.array.shape[2]
    expected = read_dicom_series(classic.slices).volume
    np.testing.assert_array_equal(series.volume.array, expected.array)
    np.testing.assert_allclose(series.volume.affine, expected.affine, atol=1e-4)
    label = read_dicom_seg(enhanced.seg, series, DEFAULT_SEG_SEGMENTS)
    np.testing.assert_array_equal(label.array, enhanced.truth.label.array)


def test_seg_segments_are_mapped_by_the_site_settings(tmp_path):
    case = write_dicom_case(tmp_path / "case", 3)
    series = read_dicom_series(case.slices)
    label = read_dicom_seg(case.seg, series, {1: 3, 2: 2, 3: 1})
    truth = case.truth.label.array
    np.testing.assert_array_equal(label.array, np.choose(truth, [0, 3, 2, 1]))


def test_overlapping_segments_need_the_same_label_value(tmp_path):
    case = write_dicom_case(tmp_path / "case", 4, with_seg=False)
    series = read_dicom_series(case.slices)
    truth = case.truth.label.array
    masks = np.stack([truth > 0, np.isin(truth, (1, 3))], axis=-1)  # whole tumor, and the core inside it
    seg = write_seg_with_segments(tmp_path / "case", case.datasets, masks, {1: "whole tumor", 2: "core"})
    with pytest.raises(
        CaseError, match=r"segment 2 overlaps another segment with a different label value at \d+"
    ):
        read_dicom_seg(seg, series, {1: 2, 2: 1})
    label = read_dicom_seg(seg, series, {1: 2, 2: 2})
    np.testing.assert_array_equal(label.array, np.where(truth > 0, 2, 0))


def test_rtstruct_contours_fill_the_voxels_inside_with_holes(tmp_path):
    case = write_dicom_case(tmp_path / "case", 5, with_seg=False)
    series = read_dicom_series(case.slices)
    k = 6
    outer = square_contour(case.datasets[k], (6.5, 7.5), (6.0, 5.0))  # voxel centres i 7..12, j 8..12
    hole = square_contour(case.datasets[k], (8.5, 9.5), (2.0, 2.0))  # i 9..10, j 10..11
    other = square_contour(case.datasets[k + 1], (2.5, 2.5), (1.0, 1.0))  # i 3, j 3
    path = write_rtstruct(tmp_path / "case", case.datasets, {"GTV": [outer, hole], "Body": [other]})
    label = read_rtstruct(path, series, {"gtv": 3})
    expected = np.zeros_like(label.array)
    expected[7:13, 8:13, k] = 3
    expected[9:11, 10:12, k] = 0
    np.testing.assert_array_equal(label.array, expected)  # Body is not in the mapping: not a label
    np.testing.assert_array_equal(label.affine, series.volume.affine)


def test_rtstruct_without_mapping_or_off_slice_is_refused(tmp_path):
    case = write_dicom_case(tmp_path / "case", 6, with_seg=False)
    series = read_dicom_series(case.slices)
    contour = square_contour(case.datasets[4], (2.5, 2.5), (3.0, 3.0))
    path = write_rtstruct(tmp_path / "case", case.datasets, {"GTV": [contour]})
    with pytest.raises(CaseError, match=r"need a mapping of ROI names .* ROIs in this file: \['GTV'\]"):
        read_rtstruct(path, series, {})
    with pytest.raises(
        CaseError, match=r"none of its ROIs \['GTV'\] is named in the site's mapping \['ctv'\]"
    ):
        read_rtstruct(path, series, {"ctv": 2})
    contour[:, 2] += 1.7  # between two slices 4 mm apart
    off = write_rtstruct(tmp_path / "case", case.datasets, {"GTV": [contour]})
    with pytest.raises(CaseError, match="contour 1 of ROI 'GTV' does not lie on an image slice"):
        read_rtstruct(off, series, {"gtv": 1})


def test_polygon_mask_even_odd_rule():
    triangle = np.array([[-0.5, -0.5], [4.6, -0.5], [-0.5, 4.6]])  # hypotenuse i + j = 4.1
    mask = polygon_mask((6, 6), triangle)
    inside = {(i, j) for i in range(6) for j in range(6) if i + j <= 4}
    assert {tuple(map(int, p)) for p in np.argwhere(mask)} == inside
