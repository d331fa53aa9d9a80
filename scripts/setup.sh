#!/usr/bin/env bash
# Create .venv in the repository root and install siamkit into it (editable), with its test and
# lint tools (the `dev` extra) and a headless browser for the report's test: the developer and CI
# install. `--user` installs siamkit alone, for running it (./quickstart.sh does).
# Plain `pip install torch torchvision` is used (the registry's build; it runs on CPUs too; the
# README says how to take PyTorch's smaller CPU-only wheels instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--user" ]; then
  .venv/bin/python -m pip install --quiet -e .
  echo "siamkit installed in .venv ($(.venv/bin/siamkit --version))"
  exit 0
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Headless Chromium for the HTML report's browser test (tests/eval/test_report.py). Playwright's
# own download host is not reachable here; the npm package @sparticuz/chromium carries a
# brotli-compressed headless Chromium for Linux x64 inside its tarball, so npm can fetch it.
CHROMIUM_PACKAGE=@sparticuz/chromium@153.0.0
install_browser() {
  rm -rf .browser && mkdir -p .browser
  npm install --prefix .browser/npm --no-audit --no-fund --no-save --silent "$CHROMIUM_PACKAGE" &&
  node -e 'const fs = require("fs"), zlib = require("zlib");
    const packed = fs.readFileSync(".browser/npm/node_modules/@sparticuz/chromium/bin/chromium.br");
    fs.writeFileSync(".browser/chromium", zlib.brotliDecompressSync(packed), {mode: 0o755});' &&
  rm -rf .browser/npm && echo "$CHROMIUM_PACKAGE" > .browser/VERSION
}
if [ "$(cat .browser/VERSION 2>/dev/null)" != "$CHROMIUM_PACKAGE" ]; then
  # Only the report's browser test needs it: siamkit itself works without, so warn, don't stop.
  install_browser || echo "warning: no headless Chromium (needs node + npm); tests/eval/test_report.py will fail" >&2
fi
echo "siamkit installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
