"""`python -m deploy.site.supernode_runner ARGS…`: Flower's `flower-supernode ARGS…` with the shorter fixed waits
of deploy/site/flower_waits.py (a message reaches the site within 0.5 s instead of up to 3 s, and its reply and
objects move on without 0.5–4 s sleeps). Everything else is Flower's own SuperNode, arguments included."""

import sys

SUPERNODE_MODULE = "deploy.site.supernode_runner"


def supernode_command() -> list[str]:
    """The command prefix that starts a site's SuperNode (followed by `flower-supernode`'s arguments)."""
    return [sys.executable, "-m", SUPERNODE_MODULE]


def main() -> None:
    from flwr.supernode.cli import flower_supernode

    from deploy.site.flower_waits import shorten_pull_backoff, shorten_supernode_sleeps

    shorten_supernode_sleeps()
    shorten_pull_backoff()
    sys.argv[0] = "flower-supernode"
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
