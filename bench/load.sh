#!/usr/bin/env bash
# Load benchmark: N generated GitHub-like events (../shared/bench/gen_events.py) loaded with
# `highwater run` into a fresh DuckDB file, append and merge, as whole processes; prints wall
# seconds, root rows/s and peak RSS. With DLT_PYTHON set (a python with dlt 1.31.0, e.g. from
# ../shared/bench/setup-dlt.sh), dlt loads the same file in the same run (--format parquet).
#
#   bash bench/load.sh 1000000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python bash bench/load.sh 200000
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-200000}

data="$cache/events-$N.jsonl"
[ -s "$data" ] || python3 "$shared/bench/gen_events.py" "$N" -o "$data"
echo "data: $data ($(du -h "$data" | cut -f1), $N events)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for disposition in append merge; do
  dir="$work/$disposition"
  mkdir -p "$dir"
  cat >"$dir/pipeline.toml" <<TOML
[pipeline]
name = "bench"
destination = "duckdb:bench.duckdb"
dataset = "events_data"
working_dir = "work"

[[resources]]
name = "events"
write_disposition = "$disposition"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "$data"
TOML
  measure "highwater $disposition" "$N" "$bin" run "$dir/pipeline.toml" --progress none
  if [ -n "${DLT_PYTHON:-}" ]; then
    measure "dlt $disposition" "$N" "$DLT_PYTHON" "$shared/bench/dlt_load.py" "$data" --format parquet \
      --disposition "$disposition" --workdir "$work/dlt-$disposition"
  fi
done
