#!/bin/sh
# Connect site "@@{site}" to federation "@@{federation}" from this kit, in the foreground.
# Stop it with Ctrl-C or SIGTERM; it stops the Flower SuperNode it started. Logs: <work-path>/logs/.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
exec "${ONCOFED:-oncofed}" site start --kit "$KIT"
