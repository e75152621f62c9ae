"""The site gate's hook into Flower: pinned to flwr 1.42, and checked against the installed source, so that a
Flower upgrade that moves the hook fails here instead of silently running unapproved apps.

Hook: flwr/supercore/superexec/run_superexec.py, function `run_superexec`, builds its plugin from the module-level
name `AutoExecPlugin` (flwr/supercore/superexec/plugin/base_exec_plugin.py) and calls `plugin.launch_task(...)`
per acquired task. deploy/site/approval_gate.py replaces that name (in its own process) with `GatedExecPlugin`.
"""

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from flwr.proto.task_pb2 import Task
from flwr.supercore.superexec import run_superexec as superexec_module
from flwr.supercore.superexec.executor import LaunchResult
from flwr.supercore.superexec.plugin import AutoExecPlugin
from flwr.supercore.superexec.plugin.base_exec_plugin import BaseExecPlugin

from deploy.kits.app_approval import approval_of, write_allow_list
from deploy.kits.release_fab import FabInfo
from deploy.site import approval_gate as executor_gate
from deploy.site.approval_gate import HOOKED_MODULE, HOOKED_NAME, GatedExecPlugin, install_gate
from models.shared.wire import APP_NOT_APPROVED, refusal_reason


def test_flower_is_the_pinned_release():
    assert version("flwr").startswith("1.42."), "the gate hooks flwr 1.42 internals: re-check them first"
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'"flwr\[simulation(,\w+)*\]==1\.42\.\*"', pyproject)  # extras may be added (dp)


def test_run_superexec_builds_its_plugin_from_the_hooked_name():
    assert superexec_module.__name__ == HOOKED_MODULE
    source = inspect.getsource(superexec_module.run_superexec)
    assert f"plugin = {HOOKED_NAME}(" in source  # looked up in the module at call time: replaceable
    assert "plugin.launch_task(" in source and "token=combined_res.token, task=combined_res.task" in source
    assert issubclass(GatedExecPlugin, AutoExecPlugin)
    assert "launch_task" in vars(BaseExecPlugin)  # what GatedExecPlugin's super() call reaches


def test_flowers_own_refusal_path_is_what_the_gate_reuses():
    """The gate answers a refused task like run_clientapp answers a failed ClientApp."""
    from flwr.supernode.runtime import run_clientapp

    for name in ("pull_task_input", "push_message", "push_task_output"):
        assert name in vars(run_clientapp)
    source = inspect.getsource(run_clientapp.run_clientapp)
    assert "Message(Error(code=e_code, reason=reason), reply_to=message)" in source
    assert "push_task_output(" in source


def test_task_carries_the_fab_hash():
    assert "fab_hash" in Task.DESCRIPTOR.fields_by_name


class RecordingExecutor:
    """Stands in for Flower's subprocess executor: records what would be launched (no process is started)."""

    def __init__(self) -> None:
        self.launched: list = []

    def launch(self, spec) -> LaunchResult:
        self.launched.append(spec)
        return LaunchResult.accepted()


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.setattr(superexec_module, HOOKED_NAME, AutoExecPlugin)  # restored after the test
    install_gate(tmp_path / "approved-apps.toml")
    assert getattr(superexec_module, HOOKED_NAME) is GatedExecPlugin
    executor = RecordingExecutor()
    plugin = GatedExecPlugin("127.0.0.1:1", insecure=True, root_certificates_path=None, executor=executor)
    return plugin, executor, tmp_path / "approved-apps.toml"


def approved(path: Path, fab_hash: str) -> None:
    info = FabInfo(sha256=fab_hash, publisher="p", name="n", version="1", files=(), config_keys=frozenset())
    write_allow_list(path, [approval_of(info, "test")])


def test_an_approved_hash_is_launched(gate):
    plugin, executor, allow_list = gate
    approved(allow_list, "a" * 64)
    result = plugin.launch_task("token", Task(task_id=7, run_id=3, type="flwr-clientapp", fab_hash="a" * 64))
    assert result == LaunchResult.accepted()
    assert [(spec.token, spec.fab_hash) for spec in executor.launched] == [("token", "a" * 64)]


def test_an_unapproved_hash_is_answered_not_launched(gate, monkeypatch):
    plugin, executor, allow_list = gate
    approved(allow_list, "a" * 64)
    answered = []
    monkeypatch.setattr(executor_gate, "answer_refusal", lambda *args: answered.append(args))
    result = plugin.launch_task("token", Task(task_id=8, run_id=3, type="flwr-clientapp", fab_hash="b" * 64))
    assert result == LaunchResult.accepted() and executor.launched == []
    ((address, token, reason),) = answered
    assert address == "127.0.0.1:1"
    assert token == "token" and reason == refusal_reason("b" * 64)
    assert reason.startswith(APP_NOT_APPROVED) and "b" * 64 in reason


def test_an_unreadable_allow_list_approves_nothing(gate, monkeypatch):
    plugin, executor, allow_list = gate
    allow_list.write_text("[[app]\n")
    monkeypatch.setattr(executor_gate, "answer_refusal", lambda *args: None)
    plugin.launch_task("token", Task(task_id=9, run_id=3, type="flwr-clientapp", fab_hash="a" * 64))
    assert executor.launched == []
