#!/usr/bin/env bash
# HTTP generator benchmark: redproof, wrk, oha and Locust (FastHttpUser)
# against the same local nginx (one worker, fixed 200) with the same
# connection count, in one run. redproof and Locust send a 3:1 weighted mix
# of two paths nginx answers identically; wrk and oha send one path. Prints requests/s, CPU µs per request
# (user+sys of the generator / requests), peak RSS, and redproof's ratios.
# Then checks redproof's peak RSS on a 1,000,000-request run against a
# 200,000-request one (memory must not grow with run length), and the
# open model's p50 at 200/s against one closed-model user's (precise
# arrivals: within 100 µs), back to back and paced at the same 200/s (the
# same idle gaps between requests, so the difference is the schedule's
# own), with the open model's start lag and its CPU per request at 2000/s.
#
#   CONNS=50 DURATION=10 ci/bench-http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${CONNS:-50}"
DURATION="${DURATION:-10}"
export NGINX_PORT="${NGINX_PORT:-18080}"
WORK="$(mktemp -d)"

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >/dev/null
fi
command -v oha >/dev/null || cargo install --locked --quiet oha
command -v locust >/dev/null || pip install --quiet locust || pip install --quiet --break-system-packages locust
cargo build --release --quiet

source ci/nginx.sh

measure() { # name, then the command; appends "name user sys maxrss_kb" to $WORK/cpu
  local name=$1; shift
  /usr/bin/time -f "$name %U %S %M" -a -o "$WORK/cpu" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
}

echo "generators: $CONNS connections, ${DURATION}s each, target nginx on 127.0.0.1:$NGINX_PORT" >&2
TARGET="web=http://127.0.0.1:$NGINX_PORT"
measure redproof target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" \
  --users "$CONNS" --duration "${DURATION}s" --out "$WORK/redproof.json"
measure wrk wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$NGINX_PORT/"
measure oha oha --no-tui --output-format json -c "$CONNS" -z "${DURATION}s" "http://127.0.0.1:$NGINX_PORT/"
measure locust locust -f ci/bench/locustfile.py --headless --only-summary -u "$CONNS" -r "$CONNS" \
  -t "${DURATION}s" --host "http://127.0.0.1:$NGINX_PORT" --csv "$WORK/locust"

echo "memory: redproof peak RSS over 200k and 1M requests" >&2
measure rss200k target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" --users "$CONNS" --iterations 200k
measure rss1m target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" --users "$CONNS" --iterations 1M

echo "arrivals: open model at 200/s against one closed-model user, back to back and paced at 200/s" >&2
target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" --users 1 \
  --duration "${DURATION}s" --out "$WORK/closed.json"
sed 's/^load: .*/load: { users: 1, pace: 5ms, duration: 10s }/' ci/bench/http.yaml >"$WORK/paced.yaml"
target/release/redproof run "$WORK/paced.yaml" --quiet --target "$TARGET" \
  --duration "${DURATION}s" --out "$WORK/paced.json"
target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" --rate 200/s \
  --duration "${DURATION}s" --out "$WORK/open.json"
measure open2k target/release/redproof run ci/bench/http.yaml --quiet --target "$TARGET" --rate 2000/s \
  --duration "${DURATION}s" --out "$WORK/open2k.json"
for r in closed paced open; do
  target/release/redproof report "$WORK/$r.json" --format json >"$WORK/$r.report.json"
done

python3 - "$WORK" "$DURATION" <<'PY'
import csv, json, re, sys
work, duration = sys.argv[1], float(sys.argv[2])
cpu = {}
for line in open(f"{work}/cpu"):
    parts = line.split()
    if len(parts) == 4 and parts[0] in ("redproof", "wrk", "oha", "locust", "rss200k", "rss1m", "open2k"):
        cpu[parts[0]] = (float(parts[1]) + float(parts[2]), int(parts[3]) / 1024)

def requests(name):
    if name == "redproof":
        r = json.load(open(f"{work}/redproof.json"))
        return sum(o["count"] for q in r["requests"] for o in q["outcomes"]), r["timing"]["load_s"]
    if name == "wrk":
        m = re.search(r"(\d+) requests in ([\d.]+)s", open(f"{work}/wrk.out").read())
        return int(m.group(1)), float(m.group(2))
    if name == "oha":
        r = json.load(open(f"{work}/oha.out"))
        return sum(r["statusCodeDistribution"].values()), r["summary"]["total"]
    if name == "locust":
        for row in csv.DictReader(open(f"{work}/locust_stats.csv")):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), duration
    raise SystemExit(f"no figures for {name}")

rows = {}
for name in ("redproof", "wrk", "oha", "locust"):
    n, secs = requests(name)
    cpu_s, rss = cpu[name]
    rows[name] = (n / secs, cpu_s * 1e6 / n, rss)
print(f"{'generator':<10} {'req/s':>10} {'CPU µs/req':>11} {'peak RSS':>10}   redproof CPU/req ratio")
for name, (rps, us, rss) in rows.items():
    ratio = rows["redproof"][1] / us
    print(f"{name:<10} {rps:>10.0f} {us:>11.2f} {rss:>8.1f}MB   {ratio:.2f}x")
print()
print(f"targets: CPU/req <= 1.2x wrk (got {rows['redproof'][1] / rows['wrk'][1]:.2f}x), "
      f"<= 0.8x oha (got {rows['redproof'][1] / rows['oha'][1]:.2f}x)")
print(f"redproof peak RSS: {cpu['rss200k'][1]:.1f}MB for 200k requests, "
      f"{cpu['rss1m'][1]:.1f}MB for 1M requests (target <= 30MB, flat)")
p50 = lambda r: json.load(open(f"{work}/{r}.report.json"))["summary"]["all"]["p50_us"]
closed, paced, open_ = p50("closed"), p50("paced"), p50("open")
lag = json.load(open(f"{work}/open.json"))["schedule"]
print(f"arrivals: open-model p50 {open_}µs at 200/s; closed-model p50 {closed}µs back to back "
      f"(target: within 100µs, got {open_ - closed:+d}µs), {paced}µs paced at 200/s "
      f"(got {open_ - paced:+d}µs); start lag p50 {lag['lag_p50_us']}µs, "
      f"p99 {lag['lag_p99_us']}µs, max {lag['max_lag_us']}µs")
r2k = json.load(open(f"{work}/open2k.json"))
n2k = sum(o["count"] for q in r2k["requests"] for o in q["outcomes"])
print(f"open model at 2000/s: {cpu['open2k'][0] * 1e6 / n2k:.2f} CPU µs/request "
      f"(closed model at full speed: {rows['redproof'][1]:.2f})")
PY
rm -rf "$WORK"
