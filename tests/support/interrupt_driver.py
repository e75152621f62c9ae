"""A small command built like `oncofed simulate`: it starts processes in a ProcessGroup under stop_on_signals and
exits 130 when interrupted; for the tests of the stop mechanism (tests/integration/test_processes.py).

    python interrupt_driver.py stubborn GRACE_S LOG_DIR
        a child that ignores SIGTERM and one that leaves such a grandchild in a session of its own and exits (only
        the group's mark finds it); prints `ready MARK` and waits to be interrupted
    python interrupt_driver.py ctrl-c-while-stopping GRACE_S LOG_DIR
        a child that ignores SIGTERM and one that answers SIGTERM with a Ctrl-C to this process (an operator
        pressing it while the command stops); prints `ready MARK` and ends normally, stopping the group; then it
        waits a minute, so that a Ctrl-C the stop lost shows as exit 0 a minute later
    python interrupt_driver.py ctrl-c-after-the-stop GRACE_S LOG_DIR
        a child that stops on SIGTERM; once interrupted and stopped, prints `stopped` and takes 3 s to exit (a
        second Ctrl-C pressed just after the stop finished lands there)
"""

import sys
import time
from pathlib import Path

from deploy.processes import ProcessGroup, stop_on_signals

IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)
LEAVES_A_GRANDCHILD = (
    "import subprocess, sys\n"
    f"subprocess.Popen([sys.executable, '-c', {IGNORES_SIGTERM!r}], start_new_session=True)\n"
)
CTRL_C_ON_SIGTERM = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (os.kill(os.getppid(), signal.SIGINT), os._exit(0)))\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)
STOPS_ON_SIGTERM = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
CHILDREN = {
    "stubborn": [IGNORES_SIGTERM, LEAVES_A_GRANDCHILD],
    "ctrl-c-while-stopping": [IGNORES_SIGTERM, CTRL_C_ON_SIGTERM],
    "ctrl-c-after-the-stop": [STOPS_ON_SIGTERM],
}


def main(mode: str, grace_s: float, logs: Path) -> int:
    """Exit 130 when interrupted (after the group stopped), 0 when not interrupted within a minute."""
    try:
        with stop_on_signals("the test processes"), ProcessGroup(grace_s) as processes:
            started = [
                processes.start(f"child {i}", [sys.executable, "-c", code], {}, logs / f"child-{i}.log")
                for i, code in enumerate(CHILDREN[mode])
            ]
            for process in started:  # each has set its handlers once it said so
                while "up" not in process.log_path.read_text():
                    time.sleep(0.05)
            print(f"ready {processes.mark}", flush=True)
            if mode != "ctrl-c-while-stopping":
                time.sleep(60)
        time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        if mode == "ctrl-c-after-the-stop":
            print("stopped", flush=True)
            time.sleep(3)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])))
