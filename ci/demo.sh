#!/usr/bin/env bash
# Runs the quick-start scenario against a local nginx (installed when
# missing). Extra arguments go to `redproof run`, e.g. `--duration 30s`.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/nginx.sh
cargo run --release --quiet -- run scenarios/quickstart.yaml "$@"
