#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit and end-to-end tests.
# Installs what it needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The end-to-end verification tests run a real Prometheus (Debian's
# package) and the alert rules are checked with its promtool.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "== installing prometheus"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The package's service is not needed: tests start their own Prometheus.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

# The HTML report is tested in a real browser (tests/reports.rs): Debian's
# chromium, headless. Here the test must run, never skip.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
unset REDPROOF_BROWSER_TESTS

# The conformance suite (tests/conformance/) runs apps on the real
# instrumentation libraries: Python ones from a virtualenv made from
# conformance/requirements.txt (rebuilt only when that file or the Python
# changes), grpc-go and its Prometheus interceptors from Debian's packages
# (built offline in GOPATH mode by conformance/grpc-go/build.sh).
conformance_debs="golang-go golang-google-grpc-dev golang-github-grpc-ecosystem-go-grpc-prometheus-dev protobuf-compiler protoc-gen-go-1-3 python3-venv python3-dev gcc"
missing_debs=""
for p in $conformance_debs; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing_debs="$missing_debs $p"
done
if [ -n "$missing_debs" ]; then
  echo "== installing$missing_debs"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing_debs >/dev/null
fi
venv="$PWD/target/conformance-venv"
python="${REDPROOF_CONFORMANCE_PYTHON:-python3}"
stamp="$(sha256sum conformance/requirements.txt | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== conformance virtualenv ($venv)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r conformance/requirements.txt
  echo "$stamp" > "$venv/.stamp"
fi
export REDPROOF_CONFORMANCE=1 REDPROOF_CONFORMANCE_VENV="$venv"
export REDPROOF_CONFORMANCE_RUNS="${REDPROOF_CONFORMANCE_RUNS:-5}"

# The Kubernetes manifests are checked offline against the API schemas
# that kubernetes-validate (PyPI) ships: no cluster is needed.
kvenv="$PWD/target/kubernetes-validate-venv"
if [ ! -x "$kvenv/bin/kubernetes-validate" ]; then
  echo "== kubernetes-validate virtualenv ($kvenv)"
  python3 -m venv "$kvenv"
  "$kvenv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
echo "== kubernetes-validate (deploy/kubernetes)"
"$kvenv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 deploy/kubernetes/*.yaml
# The Indexed Job's shard count must match its completions and parallelism.
job=deploy/kubernetes/shards-job.yaml
n=$(sed -n 's/^  completions: \([0-9]*\)$/\1/p' "$job")
grep -q "^  parallelism: $n\$" "$job" && grep -q -- "- --shard=$n\$" "$job" \
  || { echo "$job: completions, parallelism and --shard disagree"; exit 1; }

echo "== promtool check (ci/prometheus.yml, ci/rules)"
promtool check config ci/prometheus.yml
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
