#!/usr/bin/env bash
# Starts the polls demo service on 127.0.0.1:8000 and runs the polls
# scenario against it. Extra arguments go to `redproof run`, e.g.
# `ci/demo.sh --duration 30s --out results.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace
target/release/redproof-services polls --mean-ms 100 --stddev-ms 20 &
SERVICES=$!
trap 'kill $SERVICES 2>/dev/null; wait $SERVICES 2>/dev/null' EXIT
for _ in $(seq 50); do
  if (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null; then break; fi
  sleep 0.1
done
target/release/redproof run scenarios/polls.yaml "$@"
