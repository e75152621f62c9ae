"""Tables printed to a pipe or a file (systemd, CI, `| tee`) keep one row per line (models/shared/terminal.py): a real
`oncofed site check` whose stdout is a file, for cases whose rows are far wider than 80 (or 160) columns."""

import os
import subprocess
from pathlib import Path

import pytest
from loopback_federation import ONCOFED
from synthetic_site import add_nifti_cases

LONG_NAME = "hospital-" + "with-a-long-picture-archive-export-name-" * 4
"""Case ids over 160 characters: a row of the case table is wider than any terminal default."""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site") / LONG_NAME
    add_nifti_cases(folder, 0, 2, seed=5, name=LONG_NAME, spacing_mm=5.0)
    return folder


def site_check(site: Path, work: Path, out: Path, **env: str) -> list[str]:
    with open(out, "w") as stdout:
        result = subprocess.run(
            [ONCOFED, "site", "check", "--data", str(site), "--work", str(work)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "COLUMNS"} | env,
            timeout=600,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    return out.read_text().splitlines()


def test_each_row_of_a_table_is_one_line_in_a_file(site, tmp_path):
    lines = site_check(site, tmp_path / "work", tmp_path / "check.txt")
    rows = [line for line in lines if line.strip().startswith(LONG_NAME)]
    assert len(rows) == 2, "\n".join(lines)
    for row in rows:
        assert len(row) > 160 and "usable" in row and "nifti" in row.lower()
        assert "…" not in row  # nothing cut
        shape = row.split("usable")[1].split()[1]
        assert shape.count("x") == 2, row


def test_columns_still_sets_the_width(site, tmp_path):
    lines = site_check(site, tmp_path / "work", tmp_path / "check.txt", COLUMNS="100")
    assert all(len(line) <= 100 for line in lines if LONG_NAME[:20] in line)
    assert not [line for line in lines if line.strip().startswith(LONG_NAME) and "usable" in line]
