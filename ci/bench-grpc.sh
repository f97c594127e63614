#!/usr/bin/env bash
# gRPC generator benchmark: redproof against h2load (Debian's
# nghttp2-client) in one run, both calling unary RevertName on the
# revert-name demo service over the same number of h2c connections, one
# call in flight per connection. h2load sends the same gRPC frame (5-byte
# prefix + the protobuf message redproof encodes from YAML) as HTTP/2
# POSTs. Prints calls/s, CPU µs per call (user+sys of the generator /
# calls), peak RSS, and redproof's ratio to h2load (target <= 2x).
#
#   CONNS=50 DURATION=10 ci/bench-grpc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${CONNS:-50}"
DURATION="${DURATION:-10}"
PORT="${GRPC_PORT:-18052}"
METRICS_PORT="${GRPC_METRICS_PORT:-18098}"
WORK="$(mktemp -d)"

need_apt=()
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >/dev/null
fi
cargo build --release --quiet --workspace

target/release/redproof-services revert-name --grpc-port "$PORT" --metrics-port "$METRICS_PORT" --edge "" \
  >"$WORK/service.log" 2>&1 &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

# The gRPC frame of RevertNameRequest { name: "alice" }: no compression,
# 4-byte big-endian length, then field 1 (tag 0x0a) as a 5-byte string.
printf '\x00\x00\x00\x00\x07\x0a\x05alice' >"$WORK/frame.bin"

measure() { # name, then the command; appends "name user sys maxrss_kb" to $WORK/cpu
  local name=$1; shift
  /usr/bin/time -f "$name %U %S %M" -a -o "$WORK/cpu" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
}

echo "generators: $CONNS connections, ${DURATION}s each, revert-name on 127.0.0.1:$PORT" >&2
measure redproof target/release/redproof run ci/bench/grpc.yaml --quiet \
  --target "revert=http://127.0.0.1:$PORT" --users "$CONNS" --duration "${DURATION}s" \
  --out "$WORK/redproof.json"
measure h2load h2load -c "$CONNS" -t 2 -m 1 -D "$DURATION" -d "$WORK/frame.bin" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$PORT/revertname.RevertName/RevertName"

python3 - "$WORK" "$DURATION" <<'PY'
import json, re, sys
work, duration = sys.argv[1], float(sys.argv[2])
cpu = {}
for line in open(f"{work}/cpu"):
    parts = line.split()
    if len(parts) == 4:
        cpu[parts[0]] = (float(parts[1]) + float(parts[2]), int(parts[3]) / 1024)

r = json.load(open(f"{work}/redproof.json"))
ok = sum(o["count"] for q in r["requests"] for o in q["outcomes"] if o["outcome"] == {"grpc": "OK"})
calls = sum(o["count"] for q in r["requests"] for o in q["outcomes"])
if ok != calls:
    raise SystemExit(f"redproof: {calls - ok} of {calls} calls did not end OK")
rows = {"redproof": (calls, r["timing"]["load_s"])}

text = open(f"{work}/h2load.out").read()
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", text)
if not m:
    raise SystemExit("h2load printed no figures:\n" + text + open(f"{work}/h2load.err").read())
t = re.search(r"finished in ([\d.]+)(m?s)", text)
secs = float(t.group(1)) / (1000 if t.group(2) == "ms" else 1)
rows["h2load"] = (int(m.group(4)), secs)

print(f"{'generator':<10} {'calls/s':>10} {'CPU µs/call':>12} {'peak RSS':>10}")
figures = {}
for name, (n, secs) in rows.items():
    cpu_s, rss = cpu[name]
    figures[name] = cpu_s * 1e6 / n
    print(f"{name:<10} {n / secs:>10.0f} {figures[name]:>12.2f} {rss:>8.1f}MB")
print()
print(f"target: redproof CPU/call <= 2x h2load (got {figures['redproof'] / figures['h2load']:.2f}x)")
PY
