"""How fast `oncofed` starts: `oncofed --help`, `oncofed site --help` and `oncofed coordinator --help`, each
against a bare `python -c "import typer"` in the same virtual environment.

The commands are timed in pairs (the command, then `import typer`, back to back), so that a busy machine slows
both halves of a pair alike; the headline is the median over the pairs of their ratio. Target: at most 3 (the
command layer imports nothing heavy: torch, MONAI, Flower and the readers load inside the command bodies).
Also the peak resident memory of each command (the rusage of that child, what `getrusage(RUSAGE_CHILDREN)`
reports) and which heavy packages `import oncofed_cli` loads (none expected).
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import markdown_table, parse, parser, report

PAIRS = 5
COMMANDS = {
    "cli_help": ["--help"],
    "cli_site_help": ["site", "--help"],
    "cli_coordinator_help": ["coordinator", "--help"],
}
HEAVY = ("torch", "flwr", "monai", "matplotlib", "cryptography", "highdicom", "pydicom", "nibabel", "numpy")
ONCOFED = Path(sys.executable).parent / "oncofed"


# Runs the timed commands from a small interpreter: a child's peak RSS counts its parent's memory at fork time,
# and this script's own (torch, through common.py) would swamp what is measured.
TIMER = """
import json, os, subprocess, sys, time
results = []
for command in json.loads(sys.argv[1]):
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    results.append([time.perf_counter() - started, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)])
print(json.dumps(results))
"""


def timed(commands: list[list[str]]) -> list[tuple[float, int]]:
    """Wall seconds and peak resident memory (bytes) of each command, run one after the other; each must
    succeed."""
    timer = [sys.executable, "-c", TIMER, json.dumps(commands)]
    done = subprocess.run(timer, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: the timer failed: {done.stderr}")
    results = json.loads(done.stdout)
    for command, (_, _, code) in zip(commands, results, strict=True):
        if code != 0:
            raise SystemExit(f"error: `{' '.join(command)}` exited with {code}")
    return [(seconds, rss) for seconds, rss, _ in results]


def heavy_imports() -> list[str]:
    """The heavy packages in sys.modules after `import oncofed_cli`, in a fresh interpreter."""
    code = "import sys, oncofed_cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return sorted(set(loaded.split()) & set(HEAVY))


def main() -> None:
    args = parse(parser(__doc__))
    started = time.monotonic()
    typer_import = [sys.executable, "-c", "import typer"]
    commands = {name: [str(ONCOFED), *arguments] for name, arguments in COMMANDS.items()}
    timed([typer_import, *commands.values()])  # warm-up: byte code compiled, files in the page cache
    rows, ratios = [], {}
    for name, command in commands.items():
        runs = timed([command, typer_import] * PAIRS)
        pairs = list(zip(runs[0::2], runs[1::2], strict=True))
        ratio = statistics.median(own[0] / baseline[0] for own, baseline in pairs)
        ratios[f"{name}_over_typer_import"] = ratio
        rows.append(
            [
                " ".join(["oncofed", *command[1:]]),
                statistics.median(own[0] for own, _ in pairs) * 1000,
                statistics.median(baseline[0] for _, baseline in pairs) * 1000,
                ratio,
                max(own[1] for own, _ in pairs) / 2**20,
                max(baseline[1] for _, baseline in pairs) / 2**20,
            ]
        )
    heavy = heavy_imports()
    table = markdown_table(
        [
            "command",
            "median ms",
            "`import typer` ms",
            "median ratio",
            "peak RSS MiB",
            "`import typer` RSS MiB",
        ],
        rows,
    )
    notes = [
        (
            f"{PAIRS} pairs per command (the command, then `python -c 'import typer'`), after one warm-up run "
            "each; ratio = the median over pairs of command time / typer import time in the same pair."
        ),
        f"Heavy packages loaded by `import oncofed_cli`: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)}).",
        f"Peak RSS of `oncofed --help`: {rows[0][4]:.1f} MiB (rusage of the child process).",
    ]
    report("cli_start", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
