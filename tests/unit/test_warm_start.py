"""The site gate's warm ClientApp start (deploy/site/warm_start.py): its hook into Flower, that a warm ClientApp
imports the app only from its FAB, and the fall-back to Flower's own launch."""

import inspect
import json
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supernode.runtime.run_clientapp import run_clientapp

from deploy.site.flower_waits import PULL_INITIAL_BACKOFF_S
from deploy.site.warm_start import (
    PRELOADED_MODULES,
    LaunchRequest,
    WarmExecutor,
    WarmStarter,
    app_packages,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_hooked_flower_signatures_are_what_a_warm_start_passes():
    assert set(inspect.signature(run_clientapp).parameters) == {
        "runtime_api_address",
        "token",
        "insecure",
        "certificates",
        "parent_pid",
        "runtime_dependency_install",
    }
    spec_fields = {field.name for field in fields(ExecutionSpec)}
    assert {field.name for field in fields(LaunchRequest)} <= spec_fields
    assert {"torch", "monai"} <= set(PRELOADED_MODULES)
    assert not app_packages() & {name.split(".")[0] for name in PRELOADED_MODULES}


def test_the_app_packages_are_this_distributions():
    assert {"site_app", "models", "data_prep", "server_app", "deploy"} <= app_packages()
    assert "torch" not in app_packages() and "flwr" not in app_packages()


CHILD_REPORT = textwrap.dedent(
    """
    import json, os, sys, time
    from flwr.supercore.inflatable.inflatable_utils import pull_objects
    from deploy.site import approval_gate  # the gate imports our wire keys (models) before it forks
    from deploy.site import warm_start

    packages = warm_start.app_packages()

    def report(request):
        app = sorted(name for name in sys.modules if name.split(".")[0] in packages)
        with open(request.token + ".part", "w") as out:
            json.dump({"app": app, "preloaded": "json.tool" in sys.modules, "ppid": os.getppid(),
                       "backoff": pull_objects.__kwdefaults__["initial_backoff"]}, out)
        os.replace(request.token + ".part", request.token)
        return 0

    warm_start.run_task = report  # the child runs this instead of Flower's run_clientapp
    parent_app = sorted(name for name in sys.modules if name.split(".")[0] in packages)
    starter = warm_start.WarmStarter.fork(preload=("json.tool",))
    pids = []
    for name in ("a", "b"):
        request = warm_start.LaunchRequest(
            token=os.path.join(sys.argv[1], name + ".json"), runtime_api_address="127.0.0.1:1", insecure=True,
            root_certificates_path=None, parent_pid=os.getpid(), runtime_dependency_install=False,
        )
        pids.append(starter.launch(request))
    deadline = time.time() + 30
    while time.time() < deadline and not all(os.path.exists(os.path.join(sys.argv[1], n + ".json")) for n in "ab"):
        time.sleep(0.05)
    print(json.dumps({"parent_app": parent_app, "zygote": starter.zygote_pid, "pids": pids,
                      "backoff": pull_objects.__kwdefaults__["initial_backoff"]}))
    starter.close()
    """
)


def test_a_warm_clientapp_imports_no_module_of_the_app_it_did_not_load_from_its_fab(tmp_path):
    """The gate has `models` imported when it forks the zygote (the control); each warm child starts with no
    module of the app's packages, with the preloaded libraries, as a child of the zygote, and with the site's
    short retry of message objects (the gate itself keeps Flower's 1 s)."""
    script = tmp_path / "report.py"
    script.write_text(CHILD_REPORT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    gate = json.loads(done.stdout.splitlines()[-1])
    assert "models.shared.wire" in gate["parent_app"]  # control: what a plain fork would hand the ClientApp
    assert len(set(gate["pids"])) == 2
    assert gate["backoff"] == 1
    for name in ("a", "b"):
        child = json.loads((tmp_path / f"{name}.json").read_text())
        assert child == {
            "app": [],
            "preloaded": True,
            "ppid": gate["zygote"],
            "backoff": PULL_INITIAL_BACKOFF_S,
        }


class RecordingExecutor:
    """Flower's subprocess executor's place: records what it would launch (no process is started)."""

    def __init__(self) -> None:
        self.launched: list[ExecutionSpec] = []
        self.closed = False

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        self.launched.append(spec)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Delegated untouched."""

    def close(self) -> None:
        self.closed = True


def spec(task_type: TaskType) -> ExecutionSpec:
    return ExecutionSpec(
        task_type=task_type,
        runtime_api_address="127.0.0.1:1",
        token="t",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=False,
        task_id=1,
    )


def test_without_a_zygote_a_clientapp_starts_the_flower_way_and_other_tasks_always_do():
    starter = WarmStarter.fork(preload=())
    starter.close()  # the zygote is gone
    inner = RecordingExecutor()
    executor = WarmExecutor(inner, starter)
    assert executor.launch(spec(TaskType.CLIENT_APP)).status == LaunchResult.accepted().status
    assert [s.task_type for s in inner.launched] == [
        TaskType.CLIENT_APP
    ]  # fell back to a fresh flwr-clientapp
    other = next(t for t in TaskType if t is not TaskType.CLIENT_APP)
    executor.launch(spec(other))
    assert [s.task_type for s in inner.launched] == [TaskType.CLIENT_APP, other]
    executor.reconcile()  # delegated
    executor.close()
    assert inner.closed
