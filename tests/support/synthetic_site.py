"""A synthetic NIfTI hospital of any size on the `tiny` grid, and a fixed site secret, for disclosure tests.

The `tiny` preset has 4 to 6 cases per site; the disclosure rules need sites with 10 to 30. Cases come from the
same generator as `oncofed synth` (make_case), so they are ordinary tiny phantoms; indexes continue where a site
left off, so cases can be added to an existing site as a hospital's export grows.
"""

import dataclasses
import os
from pathlib import Path

from data_prep.synth.federation import make_case
from data_prep.synth.profiles import site_profiles
from data_prep.synth.writers import write_nifti
from site_app.settings.secret import SECRET_FILE


def add_nifti_cases(
    site_dir: Path,
    first: int,
    count: int,
    seed: int = 0,
    name: str = "hospital-a",
    spacing_mm: float | None = None,
) -> list[str]:
    """Write cases `first` … `first + count - 1` (0-based) of site `name` into `site_dir` (MSD layout);
    `spacing_mm` (isotropic) instead of the tiny preset's 2.5 mm makes coarser, faster cases."""
    profile = dataclasses.replace(site_profiles("tiny", 1, seed)[0], name=name, n_cases=first + count)
    if spacing_mm is not None:
        profile = dataclasses.replace(profile, spacing_mm=(spacing_mm,) * 3)
    written = []
    for index in range(first, first + count):
        case = make_case(profile, index, seed)
        for sub, volume in (("imagesTr", case.image), ("labelsTr", case.label)):
            (site_dir / sub).mkdir(parents=True, exist_ok=True)
            write_nifti(site_dir / sub / f"{case.case_id}.nii.gz", volume.array, volume.affine)
        written.append(case.case_id)
    return written


def fix_site_secret(work: Path, byte: int) -> bytes:
    """Give a work folder a known secret (as a restored work folder would have), so a test is repeatable."""
    secret = bytes([byte]) * 32
    path = work / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(secret.hex() + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return secret
