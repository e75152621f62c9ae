"""An operator's terminal never shows a traceback: Flower's report of an exception (as `flwr run --stream` prints
it, copied from a real run's log) is dropped line by line from what `oncofed run` streams, and the error line names
the exception in one line."""

from deploy.flower_log import WithoutTracebacks, raised_exception, without_tracebacks

RED, GREEN, RESET = "\x1b[91m", "\x1b[92m", "\x1b[0m"
STREAMED = f"""Using SuperLink: oncofed (127.0.0.1:9093)
Successfully started run 123
{GREEN}INFO {RESET}:      [ROUND 0/3]
{RED}ERROR {RESET}:     The run stops: every site online refused this app (not approved by the site): hospital-a
{RED}ERROR {RESET}:     ServerApp raised an exception
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/flwr/superlink/runtime/run_serverapp.py", line 215, in run_serverapp
    context = run_(
              ^^^^^
  File "/home/flwr-home/apps/oncofed/server_app/app.py", line 67, in main
    raise RunStopped(outcome.reason)
server_app.app.RunStopped: every site online refused this app (not approved by the site): hospital-a
{GREEN}INFO {RESET}:      log uploader flushed
{RED}ERROR {RESET}:     Exit Code: 201
An unhandled exception occurred in the ServerApp.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/201.html>
"""


def shown(text: str) -> list[str]:
    lines: list[str] = []
    keep = WithoutTracebacks(lines.append)
    for line in text.splitlines():
        keep(line)
    return lines


def test_flowers_exception_report_is_not_shown_and_the_other_lines_are():
    assert shown(STREAMED) == [
        "Using SuperLink: oncofed (127.0.0.1:9093)",
        "Successfully started run 123",
        f"{GREEN}INFO {RESET}:      [ROUND 0/3]",
        (
            f"{RED}ERROR {RESET}:     The run stops: every site online refused this app (not approved by the "
            "site): hospital-a"
        ),
        f"{GREEN}INFO {RESET}:      log uploader flushed",  # a log line printed during the report still shows
    ]


def test_a_chained_traceback_outside_a_report_is_dropped_whole():
    text = (
        "before\nTraceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "b.py", line 2\nValueError: bad\nafter'
    )
    assert [line for line in without_tracebacks(text).splitlines() if line.strip()] == ["before", "after"]


def test_the_error_line_names_the_exception_of_the_latest_submission(tmp_path):
    log = tmp_path / "flwr-run.log"
    log.write_text(STREAMED)
    assert raised_exception(log) == (
        "RunStopped: every site online refused this app (not approved by the site): hospital-a"
    )
    with open(log, "a") as resumed:  # a resumed run appends its submission to the same log
        resumed.write("Successfully started run 124\nINFO :      [ROUND 1/3]\n")
    assert raised_exception(log) is None
    assert raised_exception(tmp_path / "missing.log") is None


def test_a_long_multi_line_message_is_cut_to_its_first_line(tmp_path):
    text = (
        f"Successfully started run 9\n{RED}ERROR {RESET}:     Simulation raised an exception\n"
        'Traceback (most recent call last):\n  File "x.py", line 3, in load\n'
        f"server_app.rounds.round_checkpoint.CheckpointError: checkpoint.pt cannot be read ({'x' * 400}\n"
        "Please file an issue with the following\n"
        f"{RED}ERROR {RESET}:     Exit Code: 700\n"
    )
    lines = shown(text)
    assert lines == ["Successfully started run 9"]
    (tmp_path / "flwr-run.log").write_text(text)
    raised = raised_exception(tmp_path / "flwr-run.log")
    assert raised.startswith("CheckpointError: checkpoint.pt cannot be read (xxx") and len(raised) < 330
    assert "\n" not in raised
