"""The tree itself: a reader knows from a path which side runs a file and where a change belongs.

Each product package folder holds few modules, each module is short unless its first docstring line says why it is
one job, and a module name means one thing: the same name in two packages is allowed only for the per-package
entry points that are the same idea on each side (`cli`: a package's commands, `app`: a Flower app)."""

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("models", "data_prep", "server_app", "site_app", "deploy")
MAX_MODULES_PER_PACKAGE = 15
MAX_MODULE_LINES = 400
SAME_IDEA_ON_EACH_SIDE = frozenset({"__init__", "cli", "app"})


def _package_folders() -> list[Path]:
    return sorted(
        init.parent for package in PRODUCT_PACKAGES for init in (REPO / package).rglob("__init__.py")
    )


def _modules() -> list[Path]:
    return sorted(module for folder in _package_folders() for module in folder.glob("*.py"))


def _first_docstring_line(module: Path) -> str:
    docstring = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8"))) or ""
    return docstring.split("\n", 1)[0]


def test_every_folder_of_python_modules_is_a_package():
    """A folder of modules without __init__.py would escape the packaging, the FAB and these checks."""
    loose = sorted(
        str(folder.relative_to(REPO))
        for package in PRODUCT_PACKAGES
        for folder in {path.parent for path in (REPO / package).rglob("*.py")}
        if not (folder / "__init__.py").is_file()
    )
    assert loose == []


def test_no_package_folder_holds_more_than_15_modules():
    crowded = {
        str(folder.relative_to(REPO)): count
        for folder in _package_folders()
        if (count := len([m for m in folder.glob("*.py") if m.name != "__init__.py"]))
        > MAX_MODULES_PER_PACKAGE
    }
    assert crowded == {}


def test_a_long_module_says_why_it_is_one_job():
    unexplained = {
        str(module.relative_to(REPO)): lines
        for module in _modules()
        if (lines := len(module.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        and "one job" not in _first_docstring_line(module)
    }
    assert unexplained == {}


def test_every_module_says_what_it_holds():
    silent = [
        str(module.relative_to(REPO)) for module in _modules() if not _first_docstring_line(module).strip()
    ]
    assert silent == []


def test_a_module_name_means_one_thing():
    places = defaultdict(list)
    for module in _modules():
        places[module.stem].append(str(module.relative_to(REPO)))
    repeated = {
        name: paths for name, paths in places.items() if len(paths) > 1 and name not in SAME_IDEA_ON_EACH_SIDE
    }
    assert repeated == {}


def test_the_checks_see_the_whole_tree():
    """The checks above read every side's packages (so an empty glob cannot make them pass)."""
    folders = {str(folder.relative_to(REPO)) for folder in _package_folders()}
    assert {"deploy/kits", "deploy/coordinator", "deploy/site", "deploy/simulation"} <= folders
    assert {"server_app/rounds", "server_app/strategies", "site_app/disclosure", "models/shared"} <= folders
    assert len(_modules()) > 100
