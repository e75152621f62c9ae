"""README's threat table names only tests that exist: every `path::name` (or `::name`, of the path before it in the
same cell) in its last column is a test function in that file; a row without one says "planned"."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rows() -> list[list[str]]:
    section = (
        (REPO / "README.md").read_text(encoding="utf-8").split("\n## Security", 1)[1].split("\n## ", 1)[0]
    )
    lines = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| attacker")
    ]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_every_test_the_threat_table_names_exists():
    found = 0
    for cells in rows():
        assert len(cells) == 4, cells
        shown = cells[3]
        if shown == "planned":
            continue
        path = None
        for reference in re.findall(r"`([^`]*)`", shown):
            file, _, name = reference.partition("::")
            path = REPO / file if file else path
            assert path is not None and path.is_file(), reference
            if name:
                assert re.search(rf"^(async )?def {re.escape(name)}\(", path.read_text(), re.MULTILINE), (
                    reference
                )
                found += 1
    assert found >= 20
