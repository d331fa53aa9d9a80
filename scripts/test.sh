#!/usr/bin/env bash
# The tests, on a fresh clone or after ./quickstart.sh: the developer install into .venv
# (scripts/setup.sh: siamkit with its test tools and a headless browser), then pytest.
# Arguments go to pytest, e.g. scripts/test.sh tests/test_recipes.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
