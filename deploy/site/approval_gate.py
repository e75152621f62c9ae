"""The site's code-approval gate: the SuperExec of a site, which launches a ClientApp only for an approved FAB.

`oncofed site start` runs `flower-supernode --isolation process` (the SuperNode then launches nothing itself) and
this module as the node's SuperExec (`python -m deploy.site.approval_gate`). Both share a secret
(`--superexec-auth-secret-file`), without which the SuperNode's Runtime API hands tasks to nobody else.

Hook (flwr 1.42, pinned in pyproject.toml): `flwr/supercore/superexec/run_superexec.py`, function `run_superexec`,
builds its plugin as `AutoExecPlugin(...)` (the module-level name, imported from
`flwr/supercore/superexec/plugin/base_exec_plugin.py`) and calls `plugin.launch_task(token=..., task=...)` for
each task it acquires, before anything of the app exists on this host. In this process only, that name is
replaced by `GatedExecPlugin`, a subclass whose `launch_task` checks `task.fab_hash` (the SuperNode recomputes it
from the FAB's bytes when storing the FAB) against the site's allow-list (deploy/kits/app_approval.py, read at every
task). tests/unit/test_executor_gate.py fails when the hook changes.

An approved ClientApp task is started warm, forked from a process that has imported torch and MONAI once
(deploy/site/warm_start.py), else by Flower's own launch (`flwr-clientapp --token …`). A refused one is answered here, with
the task's token, the way `flwr/supernode/runtime/run_clientapp.py` answers a failed ClientApp: pull the task
input, push `Message(Error(code, reason), reply_to=msg)`, push the task output as failed. So the coordinator
gets a refusal (the code models.shared.wire.APP_NOT_APPROVED_CODE; it knows the site from the reply's node and the
app from its own run) instead of waiting forever, and nothing of the app is unpacked, imported or installed here.
The site's log names the refused hash.
"""

import argparse
import logging
import os
import sys
from logging import ERROR, INFO, WARNING
from pathlib import Path

from flwr.app import Error, Message
from flwr.common.constant import SubStatus
from flwr.proto.task_pb2 import Task  # pylint: disable=no-name-in-module
from flwr.supercore import log
from flwr.supercore.auth.superexec_secret import load_superexec_auth_secret
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec import run_superexec as superexec_module
from flwr.supercore.superexec.executor import LaunchResult
from flwr.supercore.superexec.plugin import AutoExecPlugin
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from deploy.kits.app_approval import ApprovalError, read_allow_list
from deploy.site.warm_start import WarmExecutor, WarmStarter, WarmStartError
from models.shared.wire import APP_NOT_APPROVED_CODE, refusal_reason

GATE_MODULE = "deploy.site.approval_gate"
"""This module, as `python -m` runs it."""
HOOKED_MODULE = "flwr.supercore.superexec.run_superexec"
HOOKED_NAME = "AutoExecPlugin"


class GatedExecPlugin(AutoExecPlugin):
    """Flower's task launcher, behind the site's allow-list. Class attributes are set by `install_gate`."""

    allow_list: Path
    warm_starter: WarmStarter | None = None

    def __init__(self, *args: object, executor: object, **kwargs: object) -> None:
        if self.warm_starter is not None:
            executor = WarmExecutor(executor, self.warm_starter)
        super().__init__(*args, executor=executor, **kwargs)  # type: ignore[arg-type]

    def launch_task(self, token: str, task: Task) -> LaunchResult:
        fab_hash = task.fab_hash
        try:
            approved = {app.sha256 for app in read_allow_list(self.allow_list)}
        except ApprovalError as error:
            log(ERROR, "[oncofed gate] the allow-list cannot be read, refusing every app: %s", error)
            approved = set()
        if fab_hash and fab_hash in approved:
            log(INFO, "[oncofed gate] run %d: app sha256 %s is approved; launching it", task.run_id, fab_hash)
            return super().launch_task(token, task)
        log(
            WARNING,
            "[oncofed gate] run %d: refused app sha256 %s: not in %s. Review it and approve it with "
            "`oncofed site approve --kit <kit> --fab <file>` if this site should run it",
            task.run_id,
            fab_hash or "(none)",
            self.allow_list,
        )
        try:
            answer_refusal(self.runtime_api_address, token, refusal_reason(fab_hash))
        except Exception as error:  # noqa: BLE001 - the gate must go on serving the node whatever the reply did
            log(ERROR, "[oncofed gate] could not send the refusal of run %d: %s", task.run_id, error)
            return LaunchResult.failed(f"refusal not delivered: {error}")
        return LaunchResult.accepted()


def answer_refusal(runtime_api_address: str, token: str, reason: str) -> None:
    """Answer the task's message with an error reply and close the task as failed, using the task's token."""
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="oncofed-gate"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    try:
        message, context, _run, _fab = pull_task_input(client)  # the FAB's bytes are never unpacked
        push_message(
            client, Message(Error(code=APP_NOT_APPROVED_CODE, reason=reason), reply_to=message), context
        )
        push_task_output(client, context, SubStatus.FAILED, reason)
    finally:
        client.close()


def install_gate(allow_list: Path, warm_starter: WarmStarter | None = None) -> type[GatedExecPlugin]:
    """Make `run_superexec` build the gated plugin (this process only); with `warm_starter`, approved ClientApps
    start from its zygote (deploy/site/warm_start.py)."""
    GatedExecPlugin.allow_list = allow_list
    GatedExecPlugin.warm_starter = warm_starter
    setattr(superexec_module, HOOKED_NAME, GatedExecPlugin)
    return GatedExecPlugin


def gated_supernode_arguments(secret: Path, runtime_port: int) -> list[str]:
    """The `flower-supernode` arguments that leave launching to the gate: process isolation, the shared secret,
    the Runtime API on loopback."""
    return [
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(secret),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
    ]


def gate_command(
    runtime_port: int,
    secret: Path,
    allow_list: Path,
    site_name: str,
    supernode_pid: int,
    cold_start: bool = False,
    flower_waits: bool = False,
) -> list[str]:
    """The command that runs this gate for the SuperNode `supernode_pid` (see `main`)."""
    return [
        sys.executable,
        "-m",
        GATE_MODULE,
        "--runtime-api-address",
        f"127.0.0.1:{runtime_port}",
        "--superexec-auth-secret-file",
        str(secret),
        "--allow-list",
        str(allow_list),
        "--site-name",
        site_name,
        "--parent-pid",
        str(supernode_pid),
        *(["--cold-start"] if cold_start else []),
        *(["--flower-waits"] if flower_waits else []),
    ]


def start_warm_starter(short_waits: bool = True) -> WarmStarter | None:
    """The zygote approved ClientApps start from; None (every start cold) when it cannot be made here."""
    try:
        return WarmStarter.fork(short_waits=short_waits)
    except (OSError, WarmStartError) as error:
        log(WARNING, "[oncofed gate] ClientApps start cold (a fresh flwr-clientapp each): %s", error)
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="OncoFed site gate: Flower's SuperExec, for approved apps only"
    )
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, host:port")
    parser.add_argument("--superexec-auth-secret-file", required=True, type=Path)
    parser.add_argument("--allow-list", required=True, type=Path, help="the site kit's approved-apps.toml")
    parser.add_argument("--site-name", required=True, help="for the log only")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="start every ClientApp as a fresh `flwr-clientapp` process instead of forking it warm",
    )
    parser.add_argument(
        "--flower-waits",
        action="store_true",
        help="warm ClientApps keep Flower's 1 s first retry of a message object not yet at the SuperNode "
        "(for benchmarks that compare; default 0.05 s)",
    )
    args = parser.parse_args(argv)
    if (
        "FLWR_LOG_LEVEL" not in os.environ
    ):  # Flower's DEBUG level, when set, times every line (bench/overhead.py)
        logging.getLogger("flwr").setLevel(logging.INFO)
    warm_starter = (
        None if args.cold_start else start_warm_starter(not args.flower_waits)
    )  # before run_superexec starts a thread
    install_gate(args.allow_list.resolve(), warm_starter)
    log(INFO, "[oncofed gate] site %s: apps run only when approved in %s", args.site_name, args.allow_list)
    superexec_module.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,
        superexec_auth_secret=load_superexec_auth_secret(str(args.superexec_auth_secret_file)),
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main()
