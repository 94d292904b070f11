#!/usr/bin/env bash
# Incremental benchmark, as whole `highwater run` processes: a first run over N generated events
# (merge on id, incremental on created_at), then from a copy of that state a second run over a file
# of 90 % old + 10 % new events, and a second run over the unchanged file. With DLT_PYTHON set, dlt
# runs the same three loads in the same run (dlt_load.py --incremental --format parquet).
#
#   bash bench/incremental.sh 1000000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python bash bench/incremental.sh 1000000
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-1000000}
NEW=$((N / 10))

first="$cache/events-$N.jsonl"
[ -s "$first" ] || python3 "$shared/bench/gen_events.py" "$N" -o "$first"
second="$cache/events-$N-second.jsonl"
if [ ! -s "$second" ]; then
  tail -n $((N - NEW)) "$first" >"$second"
  python3 "$shared/bench/gen_events.py" "$NEW" --start-id $((N + 1)) >>"$second"
fi
echo "first: $first ($N events); second: $second ($((N - NEW)) old + $NEW new)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pipeline() { # dir file
  mkdir -p "$1"
  cat >"$1/pipeline.toml" <<TOML
[pipeline]
name = "bench"
destination = "duckdb:bench.duckdb"
dataset = "events_data"
working_dir = "work"

[[resources]]
name = "events"
write_disposition = "merge"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "$2"

[resources.incremental]
cursor_path = "created_at"
TOML
}

pipeline "$work/first" "$first"
measure "highwater first run" - "$bin" run "$work/first/pipeline.toml" --progress none
for case in new unchanged; do
  file=$second; [ "$case" = unchanged ] && file=$first
  rm -rf "$work/$case" && cp -r "$work/first" "$work/$case"
  pipeline "$work/$case" "$file"
  measure "highwater second run ($case)" - "$bin" run "$work/$case/pipeline.toml" --progress none
done

if [ -n "${DLT_PYTHON:-}" ]; then
  dlt=("$DLT_PYTHON" "$shared/bench/dlt_load.py" --incremental --format parquet --disposition merge)
  measure "dlt first run" - "${dlt[@]}" "$first" --workdir "$work/dlt-first" --keep
  measure "dlt second run (new)" - "${dlt[@]}" "$second" --workdir "$work/dlt-new" --restore-from "$work/dlt-first"
  measure "dlt second run (unchanged)" - "${dlt[@]}" "$first" --workdir "$work/dlt-same" --restore-from "$work/dlt-first"
fi
