#!/usr/bin/env bash
# Rewrites the conformance table in README.md from the rows the last run of
# the suite wrote (cargo test --test conformance, or ci/test.sh), and keeps
# a copy in TARGET/conformance/table.md. TARGET: $CARGO_TARGET_DIR or target.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
rows="$target/conformance/rows"
ls "$rows"/*.md >/dev/null 2>&1 || { echo "no rows in $rows: run cargo test --test conformance first" >&2; exit 1; }
table="$target/conformance/table.md"
{
  echo "| library | configuration | verdict | diagnosis |"
  echo "|---|---|---|---|"
  cat $(ls "$rows"/*.md | sort)
} > "$table"
start='<!-- conformance table: written by conformance/table.sh -->'
end='<!-- end of conformance table -->'
grep -qF "$start" README.md && grep -qF "$end" README.md || { echo "README.md has no conformance table markers" >&2; exit 1; }
awk -v start="$start" -v end="$end" -v table="$table" '
  $0 == start { print; while ((getline line < table) > 0) print line; skip = 1; next }
  $0 == end { skip = 0 }
  !skip { print }
' README.md > README.md.new
mv README.md.new README.md
echo "README.md: $(($(wc -l < "$table") - 2)) rows from $rows"
