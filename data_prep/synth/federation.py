"""Write a synthetic federation: one folder per hospital, each a plausible export, reproducible from a seed.

On-disk layout (``oncofed synth --out OUT --sites 3 --preset demo``)::

    OUT/
      hospital-a/                      NIfTI, Medical Segmentation Decathlon layout
        imagesTr/hospital-a-001.nii.gz   float32 image, stored orientation and spacing of the site
        labelsTr/hospital-a-001.nii.gz   uint8 labels on the same grid: 0 background, 1 necrotic core,
        ...                              2 edema, 3 enhancing tumor
      hospital-b/                      DICOM: one folder per case
        hospital-b-001/
          3F9A0C12                       CT (MR: anatomy) slices of one series (int16, rescale) and one
          ...                            DICOM-SEG (BINARY, segment number = label value), random file names
      hospital-c/                      NIfTI, like hospital-a
      ...

Sites differ (non-IID) in format, orientation, spacing, case count, tumor size and scanner appearance; see
``profiles.py``. Each site folder is written under a hidden temporary name and renamed when complete, so a
folder named ``hospital-*`` is never half-written. Existing non-empty site folders are never overwritten.
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.synth.anatomy import render_anatomy
from data_prep.synth.phantom import random_phantom, render, sampling_grid
from data_prep.synth.profiles import SiteProfile, site_profiles
from data_prep.synth.writers import write_dicom_seg, write_dicom_series, write_nifti
from data_prep.volume import Volume


@dataclass(frozen=True, eq=False)
class SynthCase:
    """One case's ground truth in memory, on the site's stored grid: float32 image, uint8 label, RAS affine."""

    case_id: str
    image: Volume
    label: Volume


def make_case(profile: SiteProfile, index: int, seed: int) -> SynthCase:
    """Ground truth of case ``index`` (0-based) of ``profile``'s site; depends only on (seed, site name, index).

    The anatomy does not depend on the grid: changing ``profile``'s spacing or orientation resamples the same head
    (the phantom's, or the warped MNI152 brain's for the anatomy preset).
    """
    rng = np.random.default_rng([seed, index, *profile.name.encode()])
    shape, affine = sampling_grid(profile)
    if profile.anatomy == "mni152":
        sample = render_anatomy(profile, shape, affine, rng)
        image, label = sample.image, sample.label
    else:
        image, label = render(random_phantom(profile, rng), shape, affine, rng)
    return SynthCase(
        case_id=f"{profile.name}-{index + 1:03d}",
        image=Volume(array=image, affine=affine),
        label=Volume(array=label, affine=affine),
    )


def write_federation(
    out: Path, n_sites: int, seed: int, preset: str, on_case_written: Callable[[], None] | None = None
) -> list[Path]:
    """Write ``n_sites`` site folders under ``out`` and return them; ``on_case_written`` is called after each case.

    Raises ValueError for an unknown preset or site count, FileExistsError (before writing anything) if a site
    folder already exists and is not empty.
    """
    out = Path(out)
    profiles = site_profiles(preset, n_sites, seed)
    _prepare_output(out, profiles)
    return [write_site(out, profile, seed, on_case_written) for profile in profiles]


def write_held_out(out: Path, n_sites: int, seed: int, preset: str, n_cases: int) -> list[Path]:
    """Write each site's held-out test cases under ``out``: ``n_cases`` more cases of the same site profile, drawn
    after the ones write_federation writes for it (case numbers n+1 … n+``n_cases`` of a site with n cases), so
    they share the site's scanner, format and tumour distribution and are none of its own cases.

    A benchmark measures every model on them; no site trains or validates on them. Same errors as
    write_federation."""
    if n_cases < 1:
        raise ValueError(f"held-out cases per site must be at least 1, not {n_cases}")
    out = Path(out)
    profiles = site_profiles(preset, n_sites, seed)
    _prepare_output(out, profiles)
    return [
        write_site(out, profile, seed, first_index=profile.n_cases, n_cases=n_cases) for profile in profiles
    ]


def _prepare_output(out: Path, profiles: list[SiteProfile]) -> None:
    """Create ``out``; FileExistsError, before anything is written, if it is not a folder or one of the profiles'
    site folders in it already exists and is not empty."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output folder")
    for profile in profiles:
        site_dir = out / profile.name
        if site_dir.exists() and (not site_dir.is_dir() or any(site_dir.iterdir())):
            raise FileExistsError(f"{site_dir} already exists and is not empty; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)


def write_site(
    out: Path,
    profile: SiteProfile,
    seed: int,
    on_case_written: Callable[[], None] | None = None,
    first_index: int = 0,
    n_cases: int | None = None,
) -> Path:
    """Write ``profile``'s site folder under ``out`` (staged under a hidden name, renamed when complete); return it.

    Cases ``first_index`` … ``first_index + n_cases - 1`` (default: the profile's own cases, 0 … n_cases - 1).
    The caller has checked that the site folder does not exist or is empty (write_federation does)."""
    staging = out / f".{profile.name}.partial-{os.getpid()}"
    staging.mkdir()
    count = profile.n_cases if n_cases is None else n_cases
    try:
        for index in range(first_index, first_index + count):
            _write_case(staging, make_case(profile, index, seed), profile, seed)
            if on_case_written is not None:
                on_case_written()
        site_dir = out / profile.name
        os.replace(staging, site_dir)  # replaces an empty folder too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return site_dir


def _write_case(site_dir: Path, case: SynthCase, profile: SiteProfile, seed: int) -> None:
    if profile.image_format == "nifti":
        for sub, volume in (("imagesTr", case.image), ("labelsTr", case.label)):
            (site_dir / sub).mkdir(exist_ok=True)
            write_nifti(site_dir / sub / f"{case.case_id}.nii.gz", volume.array, volume.affine)
    else:
        case_dir = site_dir / case.case_id
        case_dir.mkdir()
        datasets = write_dicom_series(
            case_dir, case.image, case_id=case.case_id, seed=seed, modality=profile.dicom_modality
        )
        write_dicom_seg(case_dir, datasets, case.label.array, seed=seed)
