"""Round overhead: a 4-site round's wall time in Flower (simulation and loopback deployment) vs the sites' compute.

Compute: each site's ClientApp (site_app.app, with its mods) handling one train and one evaluate message in this
warm process, with the run's config and a warm preprocessing cache: what a round costs the site without Flower.
Then the same federation runs in Flower's Simulation Engine (deploy.simulation.launch) and three times as a
loopback deployment (an insecure SuperLink and, per site, a SuperNode with its own FLWR_HOME and runtime port and
the site's gate as its SuperExec, as `oncofed site start` runs them, on free ports), in the same run (DEPLOYMENTS):
as a site runs by default (warm ClientApp starts, deploy/site/warm_start.py, and the site kit's shorter Flower
waits, deploy/site/flower_waits.py); the same with Flower's own waits; and as Flower ships (a fresh
`flwr-clientapp` per message, Flower's waits). Every mode moves the weights packed (models/packed_weights.py).
The CPU time of every process a deployment started is summed by role (SuperLink, ServerApp, SuperNodes, gates,
zygotes, ClientApps), with each process's record in <mode>/process-cpu.json. Each round's wall time is read from the ServerApp's streamed log. Also
measured: the start cost of a fresh ClientApp process (interpreter + imports), which a cold start pays.

The deployment runs with Flower's DEBUG log level, so that every line of every Flower process carries its time;
bench/round_timeline.py reads from them where a deployed round's time goes, hop by hop (the timeline tables).

Where a deployed message waits (flwr 1.42, paths under site-packages/flwr):
- SuperNode, between two fetches that found no message: a fixed `time.sleep(3)`
  (supernode/start_client_internal.py:263); no setting (`--max-wait-time` bounds reconnection retries, not this).
  Every message waits 0-3 s here before its site sees it; a site kit's SuperNode waits 0.5 s
  (deploy/site/flower_waits.py).
- SuperNode, for its ClientApp's reply: a fixed 0.5 s poll (supernode/start_client_internal.py:470); the same while
  pushing for object contents (line 506); 0.05 s in a site kit's SuperNode.
- Any object pull (SuperNode from SuperLink, ClientApp from SuperNode) of an object not there yet: Flower backs off
  1 s, 2 s, 4 s … (supercore/constant.py PULL_INITIAL_BACKOFF, bound as keyword defaults in
  supercore/inflatable/inflatable_utils.py); 0.05 s doubling to 0.5 s in a site kit's SuperNode and warm ClientApps.
- SuperExec, between two task polls: FLWR_SUPEREXEC_TASK_POLL_INTERVAL (supercore/superexec/run_superexec.py:48-51,
  sleep at line 277; default 1.0 s); deploy/flower_env.py sets 0.2 s for every Flower process we start.
- ClientApp process: no poll; it pulls its message once it runs (supernode/runtime/run_clientapp.py,
  `pull_task_input`). Started cold it pays its interpreter and imports (torch, MONAI) for every message; the
  site gate forks it from a process that imported those once.
- ServerApp: Flower's Grid.send_and_receive sleeps 3 s between pulls (superlink/grid/http_grid.py:412) and its node
  sampler 1 s while waiting for nodes (serverapp/strategy/strategy_utils.py:180); the round loop uses neither
  (server_app/rounds/grid_exchange.py pulls every POLL_S, SelectedNodes skips the sampler's wait).
"""

import dataclasses
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
    REPO,
    ProcessCpu,
    RoundClock,
    RunMemory,
    coordinator_identity,
    follow,
    markdown_table,
    out_folder,
    parse,
    parser,
    report,
    run_config,
)
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from round_timeline import HOP_HEADERS, ROUND_HEADERS, hop_rows

from data_prep.synth.federation import write_federation
from deploy.flower_env import app_directory, flower_env, flower_executable, toml_value, write_connection
from deploy.kits.app_approval import approval_of, write_allow_list
from deploy.kits.release_fab import build_fab, inspect_fab
from deploy.processes import ProcessGroup, free_port, stop_on_signals, wait_for_health
from deploy.simulation.launch import SimulationPlan, failure_context, run_simulation
from deploy.simulation.plan import plan_simulation
from deploy.site.approval_gate import gate_command, gated_supernode_arguments
from deploy.site.supernode_runner import supernode_command
from models.packed_weights import pack_content, unpack_content
from models.presets import build_model
from models.shared.node_config import limit_key
from models.shared.run_config import ROUND_MESSAGES
from models.weights import to_record
from site_app.app import app as client_app
from site_app.settings.identity import site_folders
from site_app.settings.limits import SIMULATION_LOWER_BOUNDS

N_SITES = 4
DATA_SEED = 0
CONNECTION = "oncofed-bench"
RUN_TIMEOUT_S = 1800.0
SITE_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The loopback sites share this host's cores: each site's torch would otherwise run one thread per core in every
site process at once, and they spin against each other (measured with 4 sites on 2 cores: a train handler that
takes 4 s alone took 42 s in the deployment, warm or cold)."""


@dataclasses.dataclass(frozen=True)
class Deployment:
    """How a deployment mode starts its sites."""

    warm: bool
    """The gates fork ClientApps warm (a site's default), else start each fresh (`--cold-start`)."""
    short_waits: bool
    """SuperNodes run with deploy/site/flower_waits.py's waits (a site's default), else Flower's own."""


DEPLOYMENTS = {
    "deployment": Deployment(warm=True, short_waits=True),
    "deployment flower waits": Deployment(warm=True, short_waits=False),
    "deployment cold": Deployment(warm=False, short_waits=False),
}
"""Deployment mode → how its sites start: as `oncofed site start` does; the same with Flower's own SuperNode
waits; Flower as shipped (cold ClientApps, its waits)."""


def node_config(data: Path, work: Path) -> dict[str, str | int]:
    """A SuperNode's node config; every site reports its metrics and trains however few cases it has, under the
    limits of a simulated site (a tiny site's few patches make fewer local steps than a deployed site's minimum)."""
    return {
        "site-name": data.name,
        "data-path": str(data),
        "work-path": str(work),
        "min-report-cases": 1,
        "min-train-cases": 1,
        **{limit_key(key): value for key, value in SIMULATION_LOWER_BOUNDS.items()},
    }


def handle(
    context: Context, message_type: str, server_round: int, arrays: ArrayRecord
) -> tuple[float, Message]:
    """Seconds the ClientApp takes for one message in this process (packed as the coordinator sends it), and its
    reply, unpacked."""
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
    message = Message(pack_content(content), dst_node_id=context.node_id, message_type=message_type)
    clock = time.perf_counter()
    reply = client_app(message, context)
    seconds = time.perf_counter() - clock
    unpack_content(reply.content)  # as the coordinator reads it
    if reply.has_error():
        raise RuntimeError(
            f"site {context.node_config['site-name']} failed: {reply.error.reason} "
            f"({context.node_config['work-path']}/logs/site.log)"
        )
    return seconds, reply


def one_site_compute(
    folder: Path, node_id: int, work: Path, config: dict[str, object]
) -> tuple[float, float]:
    """(train s, evaluate s) of one site for round 1, after an untimed round-0 evaluation that fills the cache."""
    initial = to_record(build_model(str(config["model-preset"]), seed=int(config["seed"])))
    with coordinator_identity():
        context = Context(
            run_id=1,
            node_id=node_id,
            node_config=node_config(folder, work / folder.name),
            state=RecordDict(),
            run_config=config,
        )
        handle(context, "evaluate", 0, initial)
        t_train, reply = handle(context, "train", 1, initial)
        t_evaluate, _ = handle(context, "evaluate", 1, reply.content["arrays"])
    return t_train, t_evaluate


def site_compute(data: Path, work: Path, config: dict[str, object]) -> dict[str, tuple[float, float]]:
    """Site → (train s, evaluate s) in this process, one site after the other."""
    return {
        folder.name: one_site_compute(folder, node_id, work, config)
        for node_id, folder in enumerate(site_folders(data), start=101)
    }


def concurrent_compute(data: Path, work: Path, config: dict[str, object]) -> dict[str, float]:
    """Site → train + evaluate s, every site in its own fresh process with one torch thread (SITE_THREADS), all
    at once: what the sites' compute costs this host when they run together, before any message moves."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--one-site", str(folder), str(node_id), str(work)],
            cwd=REPO,
            env={**os.environ, **SITE_THREADS},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for node_id, folder in enumerate(site_folders(data), start=101)
    ]
    results = {}
    for process in processes:
        out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
        if process.returncode != 0:
            raise RuntimeError(f"a site's compute process failed (exit {process.returncode})")
        answer = json.loads(out.strip().splitlines()[-1])
        results[answer["site"]] = answer["seconds"]
    return results


def one_site_main(folder: str, node_id: str, work: str) -> None:
    """`overhead.py --one-site FOLDER NODE WORK`: one site's compute (concurrent_compute's worker); prints JSON."""
    config = json.loads((Path(work) / "config.json").read_text(encoding="utf-8"))
    seconds = one_site_compute(Path(folder), int(node_id), Path(work), config)
    print(json.dumps({"site": Path(folder).name, "seconds": sum(seconds)}))


def simulated(plan: SimulationPlan) -> tuple[RoundClock, RunMemory]:
    clock = RoundClock()
    with RunMemory(plan.run_dir) as memory:
        code = run_simulation(plan, clock.on_line)
    if code != 0:
        raise RuntimeError(f"simulation failed (exit {code}):\n{failure_context(plan.run_dir)}")
    return clock, memory


def traced_env(flwr_home: Path) -> dict[str, str]:
    """A Flower process's environment, with Flower's DEBUG log level: its log lines carry their times."""
    return {**flower_env(flwr_home), "FLWR_LOG_LEVEL": "DEBUG"}


def start_deployment(data: Path, run_dir: Path, processes: ProcessGroup, mode: Deployment) -> int:
    """An insecure SuperLink and, per site, a SuperNode (own FLWR_HOME, runtime port) with the site's gate as its
    SuperExec, the app approved, on free loopback ports, in `processes` (which stops them), started as `mode` says.
    Returns the SuperLink's port."""
    logs = run_dir / "logs"
    allow_list = (
        run_dir / "approved-apps.toml"
    )  # `flwr run` submits the FAB Flower builds from the app folder
    write_allow_list(allow_list, [approval_of(inspect_fab(build_fab(app_directory()), "the app"), "bench")])
    port = free_port()
    superlink = processes.start(
        "flower-superlink",
        [
            flower_executable("flower-superlink"),
            "--insecure",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ],
        traced_env(run_dir / "superlink-home"),
        logs / "superlink.log",
    )
    wait_for_health(superlink, f"http://127.0.0.1:{port}/health")
    for folder in site_folders(data):
        site_dir = run_dir / "sites" / folder.name
        config = " ".join(f"{k}={toml_value(v)}" for k, v in node_config(folder, site_dir / "work").items())
        secret = site_dir / "superexec.secret"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_bytes(secrets.token_bytes(32))
        secret.chmod(0o600)
        runtime_port = free_port()
        env = {**traced_env(site_dir / "flwr-home"), **SITE_THREADS}
        supernode = processes.start(
            f"flower-supernode {folder.name}",
            [
                *(supernode_command() if mode.short_waits else [flower_executable("flower-supernode")]),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                *gated_supernode_arguments(secret, runtime_port),
                "--node-config",
                config,
            ],
            env,
            logs / f"supernode-{folder.name}.log",
        )
        processes.start(
            f"oncofed gate {folder.name}",
            gate_command(
                runtime_port,
                secret,
                allow_list,
                folder.name,
                supernode.pid,
                cold_start=not mode.warm,
                flower_waits=not mode.short_waits,
            ),
            env,
            logs / f"gate-{folder.name}.log",
        )
    return port


def deployed(
    data: Path, run_dir: Path, overrides: dict[str, object], mode: Deployment
) -> tuple[RoundClock, RunMemory]:
    """A loopback deployment runs the app with `flwr run`; every process started is stopped, also on failure."""
    clock = RoundClock()
    with RunMemory(run_dir) as memory, ProcessGroup() as processes:
        port = start_deployment(data, run_dir, processes, mode)
        cli_home = run_dir / "cli-home"
        env = traced_env(cli_home)
        write_connection(cli_home, CONNECTION, f"127.0.0.1:{port}")
        config_file = cli_home / "run-config.toml"
        config_file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in overrides.items()), "utf-8")
        runner = processes.start(
            "flwr run",
            [
                flower_executable("flwr"),
                "run",
                str(app_directory()),
                CONNECTION,
                "--stream",
                "--run-config",
                str(config_file),
            ],
            env,
            run_dir / "logs" / "flwr-run.log",
        )
        code = follow(runner, clock.on_line, timeout_s=RUN_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"deployment run failed (exit {code}):\n{failure_context(run_dir)}")
    return clock, memory


ROLES = (
    ("flower-superlink", "SuperLink"),
    ("flower-superexec", "SuperExec (coordinator)"),
    ("flwr-serverapp", "ServerApp"),
    ("flwr run", "flwr run"),
    ("flower-supernode", "SuperNode"),
    ("supernode_runner", "SuperNode"),
    ("flwr-clientapp", "ClientApp"),
)
"""(text of the command line, role) for the processes a deployment starts; the gate's family is told apart by
ancestry (see `role_of`)."""
GATE = "approval_gate"


def role_of(pid: int, cpu: dict[int, ProcessCpu]) -> str:
    """A deployment process's role: by its command line; a gate's fork is its zygote, a zygote's fork a warm
    ClientApp (all three share the gate's command line)."""
    command = cpu[pid].command
    if GATE in command:
        depth, parent = 0, cpu[pid].parent
        while parent in cpu and GATE in cpu[parent].command:
            depth, parent = depth + 1, cpu[parent].parent
        return ("gate", "zygote", "ClientApp")[min(depth, 2)]
    return next((role for text, role in ROLES if text in command), "other")


def cpu_by_role(cpu: dict[int, ProcessCpu]) -> dict[str, float]:
    """CPU seconds per role over a deployment run."""
    totals: dict[str, float] = {}
    for pid, seen in cpu.items():
        role = role_of(pid, cpu)
        totals[role] = totals.get(role, 0.0) + seen.seconds
    return totals


def start_seconds(code: str, repeats: int) -> float:
    """Median wall time of a fresh interpreter running `code` (imports included)."""
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def main() -> None:
    options = parser(__doc__, preset="tiny")
    options.add_argument("--model", default=None, help="model preset (default small; tiny with --quick)")
    options.add_argument(
        "--rounds", type=int, default=None, help="rounds per Flower run (default 2; 1 with --quick)"
    )
    options.add_argument("--local-epochs", type=int, default=1, help="local epochs per round (default 1)")
    options.add_argument(
        "--round-messages",
        choices=ROUND_MESSAGES.choices,
        default=ROUND_MESSAGES.default,
        help="messages per site per round (run config round-messages; default one)",
    )
    args = parse(options)
    started = time.monotonic()
    out = out_folder(args.out, "overhead")
    model = args.model or ("tiny" if args.quick else "small")
    rounds = args.rounds or (1 if args.quick else 2)

    data = out / "data"
    write_federation(data, n_sites=N_SITES, seed=DATA_SEED, preset=args.preset)
    plan = plan_simulation(data, out / "simulation", rounds, model, seed=0)
    settings = {"local-epochs": args.local_epochs, ROUND_MESSAGES.key: args.round_messages}
    plan = dataclasses.replace(plan, run_config={**plan.run_config, **settings})
    deploy_overrides = {k: v for k, v in plan.run_config.items() if not k.startswith("sim-")}

    runs = {
        "simulation": lambda: simulated(plan),
        **{
            mode: lambda mode=mode: deployed(
                data, out / mode, {**deploy_overrides, "run-dir": str(out / mode / "run")}, DEPLOYMENTS[mode]
            )
            for mode in DEPLOYMENTS
        },
    }
    compute: dict[str, dict[str, tuple[float, float]]] = {}
    rounds_s: dict[str, dict[int, float]] = {}
    whole_s: dict[str, float] = {}
    memory: dict[str, RunMemory] = {}
    with stop_on_signals("the benchmark and every Flower process it started"):
        for (
            mode,
            run,
        ) in runs.items():  # compute measured right before each mode: load drifts on a shared machine
            compute[mode] = site_compute(data, out / "compute" / mode, run_config(**plan.run_config))
            clock, memory[mode] = run()
            rounds_s[mode], whole_s[mode] = clock.durations(), clock.whole()
        together = concurrent_compute(data, out / "compute" / "all at once", run_config(**plan.run_config))
    repeats = 1 if args.quick else 3
    bare = start_seconds("pass", repeats)
    clientapp = start_seconds("import site_app.app", repeats)

    pattern = args.round_messages
    per_round = 1 if pattern == "one" else 2
    slowest = {mode: max(sum(c) for c in sites.values()) for mode, sites in compute.items()}
    serial = {mode: sum(sum(c) for c in sites.values()) for mode, sites in compute.items()}
    median = {mode: statistics.median(walls.values()) for mode, walls in rounds_s.items()}
    site_rows = [
        [
            site,
            *(v for mode in runs for v in (*compute[mode][site], sum(compute[mode][site]))),
            together[site],
        ]
        for site in compute["simulation"]
    ]
    round_rows = [
        [
            mode,
            rnd,
            wall,
            slowest[mode],
            serial[mode],
            wall / slowest[mode],
            wall / serial[mode],
            wall - slowest[mode],
        ]
        for mode, walls in rounds_s.items()
        for rnd, wall in walls.items()
    ]
    memory_rows = [
        [mode, m.peak_total / 2**30, m.peak_process / 2**30, m.peak_processes] for mode, m in memory.items()
    ]
    notes = [
        (
            f"Data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed {DATA_SEED}`; model {model}, "
            f"{rounds} round(s) per run, {args.local_epochs} local epoch(s); CPU."
        ),
        (
            "Compute = the ClientApp's train + evaluate handlers in this process (warm imports and cache), measured"
            " right before each mode; slowest = the slowest site's, Σ = all sites' (the best a single 2-core machine"
            " can do when sites take turns). All sites at once: each site's handlers in its own fresh process with one"
            " torch thread, all started together, no Flower (what the sites' compute costs this host when they run"
            " together, as they do in a deployed round): `round_over_concurrent_compute_deploy` is the deployed round"
            " over the slowest of these, `concurrent_over_serial_compute` that slowest over Σ."
        ),
        (
            f"ClientApp process start (fresh interpreter + `import site_app.app`): {clientapp:.2f} s, of which the bare "
            f"interpreter {bare:.2f} s; a cold start pays it for every message ({per_round} per site per round"
            f" with round-messages {pattern}{'; one more per site after the last round' if per_round == 1 else ''});"
            " a warm one only the app's own modules (site_app, models, data_prep) and the fork."
        ),
        "Memory: peak proportional set size of every process this benchmark started (Flower, Ray, ClientApps).",
        (
            f"Whole run (first round line → rounds finished, every message of either pattern): simulation "
            f"{whole_s['simulation']:.1f} s, deployment {whole_s['deployment']:.1f} s (cold starts "
            f"{whole_s['deployment cold']:.1f} s); run_over_serial_compute_deploy"
            " = the deployment's whole run over rounds × Σ compute (the per-round ratios put round 0's validation in"
            " round 1 and the last validation in the last round with one message per round, outside both with two)."
        ),
    ]
    ratios = {
        "round_over_compute_sim": median["simulation"] / slowest["simulation"],
        "round_over_compute_deploy": median["deployment"] / slowest["deployment"],
        "round_over_serial_compute_sim": median["simulation"] / serial["simulation"],
        "round_over_serial_compute_deploy": median["deployment"] / serial["deployment"],
        "clientapp_start_share_deploy_cold": per_round * clientapp / median["deployment cold"],
        "run_over_serial_compute_deploy": whole_s["deployment"] / (rounds * serial["deployment"]),
        "round_over_serial_compute_deploy_cold": median["deployment cold"] / serial["deployment cold"],
        "warm_over_cold_round_deploy": median["deployment flower waits"] / median["deployment cold"],
        "round_over_serial_compute_deploy_flower_waits": median["deployment flower waits"]
        / serial["deployment flower waits"],
        "short_over_flower_waits_round_deploy": median["deployment"] / median["deployment flower waits"],
        "round_over_concurrent_compute_deploy": median["deployment"] / max(together.values()),
        "concurrent_over_serial_compute": max(together.values()) / serial["deployment"],
    }
    timelines = {
        mode: hop_rows(
            out / mode / "logs" / "flwr-run.log",
            {
                folder.name: (
                    [
                        out / mode / "logs" / f"supernode-{folder.name}.log",
                        out / mode / "logs" / f"gate-{folder.name}.log",
                    ],
                    out / mode / "sites" / folder.name / "work" / "logs" / "site.log",
                )
                for folder in site_folders(data)
            },
        )
        for mode in DEPLOYMENTS
    }
    for mode in DEPLOYMENTS:  # the evidence behind the CPU table
        seen = memory[mode].cpu
        (out / mode / "process-cpu.json").write_text(
            json.dumps(
                [
                    {"pid": pid, "role": role_of(pid, seen), **dataclasses.asdict(process)}
                    for pid, process in sorted(seen.items())
                ],
                indent=1,
            ),
            encoding="utf-8",
        )
    cpu = {mode: cpu_by_role(memory[mode].cpu) for mode in DEPLOYMENTS}
    roles = sorted({role for totals in cpu.values() for role in totals})
    cpu_rows = [[role, *(cpu[mode].get(role, 0.0) for mode in DEPLOYMENTS)] for role in roles]
    cpu_rows.append(["whole run, wall s", *(whole_s[mode] for mode in DEPLOYMENTS)])
    tables = [
        markdown_table(
            [
                "site",
                *(f"{h} ({mode})" for mode in runs for h in ("train s", "evaluate s", "compute s")),
                "compute s (all sites at once, own processes, 1 thread)",
            ],
            site_rows,
        ),
        markdown_table(
            [
                "mode",
                "round",
                "wall s",
                "slowest site s",
                "Σ sites s",
                "wall/slowest",
                "wall/Σ",
                "wall − slowest s",
            ],
            round_rows,
        ),
        markdown_table(["mode", "peak memory GiB", "largest process GiB", "processes"], memory_rows),
        "CPU seconds by process role over each deployment run (user + system, at each process's last 0.5 s "
        "sample):\n\n" + markdown_table(["role", *(f"CPU s ({mode})" for mode in DEPLOYMENTS)], cpu_rows),
        *(
            f"Timeline, {mode} ({'warm' if how.warm else 'cold'} ClientApp starts, "
            f"{'the site kit' if how.short_waits else 'Flower'}'s SuperNode waits):\n\n"
            + markdown_table(HOP_HEADERS, timelines[mode][0])
            + "\n\n"
            + markdown_table(ROUND_HEADERS, timelines[mode][1])
            for mode, how in DEPLOYMENTS.items()
        ),
    ]
    report("overhead", args.results, tables, ratios, notes, started)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one-site":
        one_site_main(*sys.argv[2:])
    else:
        main()
