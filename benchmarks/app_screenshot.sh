#!/usr/bin/env bash
# docs/app.png: the page after the browser test's box, propagation and export on the demo clip.
set -euo pipefail
cd "$(dirname "$0")/.."
COLORTRACK_SCREENSHOT="$PWD/docs/app.png" python -m pytest -p no:cacheprovider tests/test_app.py \
  -k box
