"""Warm ClientApp starts at a site: the gate's fork server.

For every message, Flower's SuperExec starts `flwr-clientapp --token …`: a fresh interpreter that imports Flower,
then the app, whose libraries dominate the start (torch about 1.2 s and MONAI about 3 s of CPU on a quiet machine:
MONAI's `__init__` imports every one of its submodules). Sites on one host that start together wait for each other.

The gate instead forks, once and before it has started any thread, a *zygote*: a single-threaded process that
imports those third-party libraries and Flower's ClientApp runtime, then waits for launch requests on a socket.
For each approved ClientApp task the gate sends the task's token; the zygote forks a child that runs
`flwr.supernode.runtime.run_clientapp.run_clientapp`, what `flwr-clientapp` itself runs, and exits with its code.
The child then pulls the task, installs the FAB and loads the app from it as a fresh process would: the zygote
first drops from sys.modules every module of the app's packages that the gate had imported (the gate reads wire
keys from `models`), so the app's code is imported only after the gate approved the FAB, and from the FAB. What
the zygote keeps is libraries the site installed itself.

When the zygote is gone or cannot fork, the gate falls back to Flower's own launch (a fresh `flwr-clientapp`).

Hook (flwr 1.42, pinned in pyproject.toml): the keyword arguments of `run_clientapp` in
`flwr/supernode/runtime/run_clientapp.py` and the fields of `ExecutionSpec` in
`flwr/supercore/superexec/executor/types.py`; tests/unit/test_warm_start.py fails when either changes.
"""

import importlib
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import asdict, dataclass
from typing import Self

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult

PRELOADED_MODULES = (
    "torch",
    "monai",
    "nibabel",
    "pydicom",
    "highdicom",
    "flwr.supernode.runtime.run_clientapp",
    "flwr.supercore.tls",
)
"""What the zygote imports once: third-party libraries only, never the app's own packages."""

ZYGOTE_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
"""Set in the zygote before its imports: a CUDA check at import time then asks NVML instead of initialising CUDA,
which a forked child could not use."""

_log = logging.getLogger("flwr")


class WarmStartError(RuntimeError):
    """The zygote could not start a ClientApp (gone, or its fork failed)."""


def app_packages() -> frozenset[str]:
    """The top-level packages of the installed distribution this module belongs to (site_app, models, …): the app
    a FAB carries, which a ClientApp must import from its FAB, never from the gate's copy."""
    owners = importlib.metadata.packages_distributions()
    ours = set(owners.get(__name__.split(".")[0], ()))
    packages = frozenset(name for name, distributions in owners.items() if ours & set(distributions))
    if not packages:
        raise WarmStartError(f"{__name__} is not part of an installed distribution; install the site kit")
    return packages


def forget_modules(packages: frozenset[str]) -> list[str]:
    """Drop every module of `packages` from sys.modules, so that the next import loads it again (from the FAB)."""
    names = [name for name in sys.modules if name.split(".")[0] in packages]
    for name in names:
        del sys.modules[name]
    return names


@dataclass(frozen=True)
class LaunchRequest:
    """What a warm ClientApp needs of Flower's ExecutionSpec: the arguments `flwr-clientapp` gets."""

    token: str
    runtime_api_address: str
    insecure: bool
    root_certificates_path: str | None
    parent_pid: int | None
    runtime_dependency_install: bool

    @classmethod
    def from_spec(cls, spec: ExecutionSpec) -> Self:
        return cls(
            token=spec.token,
            runtime_api_address=spec.runtime_api_address,
            insecure=spec.insecure,
            root_certificates_path=spec.root_certificates_path,
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )


def run_task(request: LaunchRequest) -> int:
    """Run one ClientApp task in this (forked) process, as `flwr-clientapp --token …` would; its exit code."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        run_clientapp(
            runtime_api_address=request.runtime_api_address,
            token=request.token,
            insecure=request.insecure,
            certificates=validate_and_resolve_root_certificates(
                request.root_certificates_path, request.insecure
            ),
            parent_pid=request.parent_pid,
            runtime_dependency_install=request.runtime_dependency_install,
        )
        return 0
    except SystemExit as done:  # run_clientapp ends with flwr_exit
        return done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - a child must always reach os._exit
        traceback.print_exc()
        return 1


def _child(sock: socket.socket, request: LaunchRequest) -> None:
    """In the forked child: run the task, flush what it wrote, exit without the zygote's cleanup."""
    code = 1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = run_task(request)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting either way
                pass
        os._exit(code)


def serve(
    sock: socket.socket,
    packages: frozenset[str],
    preload: tuple[str, ...] = PRELOADED_MODULES,
    short_waits: bool = True,
) -> None:
    """The zygote: forget the gate's copy of the app's `packages`, import `preload`, then fork one child per
    request line and answer each with the child's pid. Returns when the gate's end of the socket closes.
    `short_waits`: children retry a message object that has not reached the SuperNode yet after 0.05 s instead of
    Flower's 1 s (deploy/site/flower_waits.py)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    if short_waits:  # before forgetting: it changes Flower's functions, which stay; our module goes
        from deploy.site.flower_waits import shorten_pull_backoff

        shorten_pull_backoff()
    forget_modules(packages)
    os.environ.update(ZYGOTE_ENV)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as error:  # the child imports it itself, as a fresh process would
            _log.warning("[oncofed gate] warm start: %s not preloaded: %s", name, error)
    reader = sock.makefile("rb")
    for line in reader:
        try:
            request = LaunchRequest(**json.loads(line))
            pid = os.fork()
        except (OSError, TypeError, ValueError) as error:
            sock.sendall(json.dumps({"error": str(error)}).encode() + b"\n")
            continue
        if pid == 0:
            _child(sock, request)
        sock.sendall(json.dumps({"pid": pid}).encode() + b"\n")


class WarmStarter:
    """The gate's end of the fork server: `launch` asks the zygote for one ClientApp and returns its pid."""

    def __init__(self, sock: socket.socket, zygote_pid: int) -> None:
        self._sock = sock
        self._answers = sock.makefile("rb")
        self._lock = threading.Lock()
        self.zygote_pid = zygote_pid

    @classmethod
    def fork(cls, preload: tuple[str, ...] = PRELOADED_MODULES, short_waits: bool = True) -> Self:
        """Fork the zygote (see `serve`). Call before this process starts any thread: only the calling thread is
        forked."""
        packages = app_packages()
        gate_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                gate_end.close()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gate's stop closes the socket
                serve(zygote_end, packages, preload, short_waits)
            except BaseException:  # noqa: BLE001 - the zygote must always reach os._exit
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        zygote_end.close()
        return cls(gate_end, pid)

    def launch(self, request: LaunchRequest) -> int:
        """Start one ClientApp from the zygote; its pid. WarmStartError when the zygote cannot."""
        with self._lock:
            try:
                self._sock.sendall(json.dumps(asdict(request)).encode() + b"\n")
                line = self._answers.readline()
            except OSError as error:
                raise WarmStartError(f"the zygote (pid {self.zygote_pid}) is gone: {error}") from error
        if not line:
            raise WarmStartError(f"the zygote (pid {self.zygote_pid}) is gone")
        answer = json.loads(line)
        if "pid" not in answer:
            raise WarmStartError(f"the zygote could not fork: {answer.get('error')}")
        return int(answer["pid"])

    def close(self) -> None:
        """Close the socket (the zygote then exits) and reap the zygote."""
        self._answers.close()
        self._sock.close()
        try:
            os.waitpid(self.zygote_pid, 0)
        except ChildProcessError:
            pass


class WarmExecutor:
    """Flower's executor with ClientApp tasks started by the zygote; everything else, and any ClientApp the zygote
    cannot start, goes to the wrapped executor (a fresh `flwr-clientapp`)."""

    def __init__(self, inner: object, starter: WarmStarter) -> None:
        self._inner = inner
        self._starter: WarmStarter | None = starter

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type is TaskType.CLIENT_APP and self._starter is not None:
            try:
                pid = self._starter.launch(LaunchRequest.from_spec(spec))
            except WarmStartError as error:
                _log.warning("[oncofed gate] warm start failed (%s); starting a fresh flwr-clientapp", error)
                self._starter = None
            else:
                _log.info("[oncofed gate] task %d: ClientApp started warm (pid %d)", spec.task_id, pid)
                return LaunchResult.accepted()
        return self._inner.launch(spec)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._starter is not None:
            self._starter.close()
        self._inner.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
