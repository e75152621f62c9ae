"""Shared fixtures, and the test tiers by folder.

- tests/unit: no Flower process, no network, no browser; seconds each (marker `unit`).
- tests/integration: real processes: Flower (SuperLink, SuperNodes, simulation), a TLS server on loopback, our CLI
  in a subprocess, a headless browser (marker `integration`). In `make test` unless also marked `slow`.
- `slow`: minutes each; only in `make test-slow`.
Helpers shared by tests live in tests/support (on the import path through pytest's `pythonpath`).
"""

import importlib
import signal
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from flwr.supercore.task_identity import TaskIdentity

BENCH = Path(__file__).resolve().parents[1] / "bench"

TIERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration}


def pytest_configure(config: pytest.Config) -> None:
    """Commands the tests start take Ctrl-C as from a terminal. A test run started in the background of a script
    (`make test &`, nohup) has SIGINT ignored, every process it starts would inherit that, and our commands
    rightly keep a signal they were started with ignored (deploy.processes.stop_on_signals): the Ctrl-C tests
    would then wait on commands that cannot hear them."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(TIERS[tier])


@pytest.fixture
def flower_task():
    """Lets tests build Flower Messages as a ServerApp would (run, node and task ids set)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.fixture
def bench_module(monkeypatch) -> Callable[[str], ModuleType]:
    """Imports a bench/ script by name, as the scripts import each other (bench/ first on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module
