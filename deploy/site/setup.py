"""`oncofed site setup --kit KIT`: the three things only the hospital knows (its data folder, its key, where work
goes) into the kit's site.toml, then every `site check` test and the first cases found, what was excluded and why.

Answers come from the flags or, on a terminal, from questions whose defaults follow install.sh's layout (the kit in
PREFIX/kit, the key in PREFIX/keys/site.key, the work folder PREFIX/work). site.toml is rewritten atomically with
only those three lines changed: its comments and the site's other settings stay as they were.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deploy.flower_env import toml_value
from deploy.kits.contents import KIT_FILE, PLACEHOLDER, SITE_FILE, KitError, read_toml
from deploy.site.preflight import check_kit
from deploy.site.site_check import check_data, print_checks
from models.shared.atomic import atomic_write_text
from models.shared.exit_codes import CommandError, ExitCode
from models.shared.node_config import NodeConfig
from models.shared.terminal import make_console
from site_app.settings.site_file import PRIVATE_KEY
from site_app.tools.data_check import DataCheck

SHOWN_CASES = 10
"""How many cases the setup lists (site check and WORK/inventory.json have them all)."""

Ask = Callable[[str, str | None], str]
"""A question and its default (None: none) -> the answer."""


@dataclass(frozen=True)
class SiteAnswers:
    data: Path
    key: Path
    work: Path


def set_up_site(kit: Path, data: Path | None, key: Path | None, work: Path | None, ask: Ask | None) -> None:
    """Write the answers into KIT/site.toml and check the site; BAD_INPUT when an answer or a kit check is
    wrong, NO_USABLE_DATA when no case is usable (site.toml is written in both cases, so `site check` can be
    rerun after fixing)."""
    kit = kit.resolve()
    read_toml(kit / KIT_FILE, f"{kit} is not a site kit (the coordinator makes one with `oncofed provision`)")
    answers = site_answers(kit, data, key, work, ask)
    write_site_answers(kit / SITE_FILE, answers)
    out = make_console(highlight=False)
    out.print(f"wrote {kit / SITE_FILE}: data {answers.data}, key {answers.key}, work {answers.work}")
    results = check_kit(kit)
    print_checks(results, out)
    check = check_data(answers.data, answers.work, None, kit / SITE_FILE)
    usable = print_cases(out, check)
    failed = [result.check for result in results if result.status == "error"]
    if failed:
        raise CommandError(
            f"{len(failed)} check(s) of the site failed ({', '.join(failed)}); fix them and run "
            f"`oncofed site check --kit {kit}`",
            ExitCode.BAD_INPUT,
        )
    if not usable:
        raise CommandError(
            f"no usable case in {answers.data}; {check.path} says why", ExitCode.NO_USABLE_DATA
        )
    out.print(
        "The site is ready: start it (systemctl enable --now oncofed-site, or oncofed site start --kit KIT)."
    )


def print_cases(out: Console, check: DataCheck) -> int:
    """The first cases found, every excluded one with its reason; returns how many are usable."""
    cases = check.inventory.cases
    excluded = [case for case in cases if case.status == "excluded"]
    out.print(f"{len(cases)} cases found: {len(cases) - len(excluded)} usable, {len(excluded)} excluded")
    for case in cases[:SHOWN_CASES]:
        out.print(f"  {case.case_id}: {case.status}", markup=False)
    if len(cases) > SHOWN_CASES:
        out.print(f"  … and {len(cases) - SHOWN_CASES} more (all of them in {check.path})", markup=False)
    if excluded:
        out.print("Excluded, and why:")
        for case in excluded:
            out.print(f"  {case.case_id}: {case.reason}", markup=False)
    return len(cases) - len(excluded)


def site_answers(
    kit: Path, data: Path | None, key: Path | None, work: Path | None, ask: Ask | None
) -> SiteAnswers:
    """The three answers (flags first, then questions, or without a terminal the defaults), checked: data a
    folder, key a file, work creatable."""
    current = _current_values(kit / SITE_FILE)
    defaults = {
        "--data": current.get(NodeConfig.DATA_PATH),
        "--key": current.get(PRIVATE_KEY) or str(kit.parent / "keys" / "site.key"),
        "--work": current.get(NodeConfig.WORK_PATH) or str(kit.parent / "work"),
    }
    questions = {
        "--data": "The folder with this hospital's studies (DICOM or NIfTI; only read)",
        "--key": "This site's private key (site.key, made before the kit)",
        "--work": "A folder OncoFed may write to (cache, logs, Flower's state)",
    }

    def answer(flag: str, given: Path | None) -> Path:
        if given is not None:
            return given.expanduser().resolve()
        if ask is None:  # no terminal: the default where there is one
            if defaults[flag] is None:
                raise CommandError(f"give {flag} (no terminal to ask on)", ExitCode.BAD_INPUT)
            return Path(defaults[flag]).expanduser().resolve()
        return Path(ask(questions[flag], defaults[flag])).expanduser().resolve()

    answers = SiteAnswers(answer("--data", data), answer("--key", key), answer("--work", work))
    if not answers.data.is_dir():
        raise CommandError(f"--data {answers.data} is not a folder", ExitCode.BAD_INPUT)
    if not answers.key.is_file():
        raise CommandError(
            f"--key {answers.key} is not a file: the site.key made with `install.sh --keygen-only` or "
            "`ssh-keygen -t ecdsa -b 384`",
            ExitCode.BAD_INPUT,
        )
    if answers.work == answers.data or answers.data in answers.work.parents:
        raise CommandError(
            f"--work {answers.work} is inside the data folder, which is never written", ExitCode.BAD_INPUT
        )
    try:
        answers.work.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise CommandError(
            f"--work {answers.work} cannot be created ({error.strerror})", ExitCode.BAD_INPUT
        ) from None
    return answers


def write_site_answers(path: Path, answers: SiteAnswers) -> None:
    """Replace data-path, work-path and private-key in site.toml (top level), keeping every other line."""
    text = path.read_text(encoding="utf-8")
    for key, value in (
        (NodeConfig.DATA_PATH, answers.data),
        (NodeConfig.WORK_PATH, answers.work),
        (PRIVATE_KEY, answers.key),
    ):
        line = f"{key} = {toml_value(str(value))}"
        pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
        top_level = text.split("\n[", 1)
        if pattern.search(top_level[0]):
            top_level[0] = pattern.sub(line.replace("\\", r"\\"), top_level[0], count=1)
        else:
            top_level[0] = f"{line}\n{top_level[0]}"
        text = "\n[".join(top_level)
    atomic_write_text(path, text, mode=path.stat().st_mode & 0o777)


def _current_values(path: Path) -> dict[str, str]:
    """site.toml's filled-in paths, absolute (placeholders are no answer)."""
    try:
        table = read_toml(path, "")
    except KitError:
        return {}
    keys = (NodeConfig.DATA_PATH, NodeConfig.WORK_PATH, PRIVATE_KEY)
    return {
        key: str(path.parent / table[key])  # relative paths in a kit are relative to the kit
        for key in keys
        if isinstance(table.get(key), str) and not table[key].startswith(PLACEHOLDER)
    }
