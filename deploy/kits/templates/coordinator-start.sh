#!/bin/sh
# Start the OncoFed coordinator of federation "@@{federation}" from this kit, in the foreground.
# Stop it with Ctrl-C or SIGTERM; it stops the Flower SuperLink it started. Logs: logs/superlink.log.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
exec "${ONCOFED:-oncofed}" coordinator start --kit "$KIT"
