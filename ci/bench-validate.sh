#!/usr/bin/env bash
# Validation must grow linearly with the scenario: times `redproof validate`
# on generated files of 20,000 and 80,000 requests and prints the ratio
# (about 4 when linear; it was 17 when duplicate names were looked up in a
# list).
#
#   ci/bench-validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time) >/dev/null
cargo build --release --quiet
for n in 20000 80000; do
  python3 - "$n" >"$WORK/$n.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print('name: big\ntargets:\n  web: { url: "http://127.0.0.1:8000" }\nload: { users: 1, duration: 1s }\nrequests:')
for i in range(n):
    print(f"  - {{ name: r{i}, http: {{ target: web, path: /p{i} }} }}")
PY
  /usr/bin/time -f "%e %M" -o "$WORK/$n.time" target/release/redproof validate "$WORK/$n.yaml" >/dev/null
done
python3 - "$WORK" <<'PY'
import sys
w = sys.argv[1]
t = {n: tuple(map(float, open(f"{w}/{n}.time").read().split())) for n in (20000, 80000)}
for n, (s, kb) in t.items():
    print(f"validate {n:>6} requests: {s:6.2f} s, peak RSS {kb/1024:6.1f} MB")
print(f"80k/20k time ratio: {t[80000][0] / max(t[20000][0], 0.01):.1f} (linear: about 4)")
PY
