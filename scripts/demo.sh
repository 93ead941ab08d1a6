#!/usr/bin/env bash
# Run the main job end to end on the local stack and print its events.
#
# Creates .venv if missing, installs the project, starts the local stack
# (building it on the first run), a watcher and a prefork Celery worker,
# submits executions of real Python code as pods, and prints the events read
# back from Kafka. Arguments are passed on to `python -m local_stack.demo`.
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh

exec .venv/bin/python -m local_stack.demo "$@"
