#!/usr/bin/env bash
# Incremental benchmark, as whole `highwater run` processes: a first run over N generated events
# (merge on id, incremental on created_at), then from a copy of that state a second run over a file
# of 90 % old + 10 % new events, and a second run over the unchanged file. With DLT_PYTHON set, dlt
# runs the same three loads in the same run (dlt_load.py --incremental --format parquet), and each
# second run alternates with dlt's PAIRS times (default 1); the script then prints the median of
# the pair ratios, which holds when the machine's speed drifts between runs.
#
#   bash bench/incremental.sh 1000000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python PAIRS=3 bash bench/incremental.sh 1000000
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
if [ -n "${DLT_PYTHON:-}" ]; then
  dlt=("$DLT_PYTHON" "$shared/bench/dlt_load.py" --incremental --format parquet --disposition merge)
  measure "dlt first run" - "${dlt[@]}" "$first" --workdir "$work/dlt-first" --keep
fi

# `seconds LABEL` prints the wall seconds `measure` printed last.
seconds() { awk -v label="$1" 'index($0, label) == 1 { v = $(NF - 4) } END { print v }' "$work/log"; }

# Second runs, alternating with dlt's when DLT_PYTHON is set (PAIRS times, default 1): each side
# starts from a copy of its first run's state, made and synced before its timed process starts.
pairs=${PAIRS:-1}
for case in new unchanged; do
  file=$second; [ "$case" = unchanged ] && file=$first
  ratios=()
  for _ in $(seq "$pairs"); do
    rm -rf "$work/$case" && cp -r "$work/first" "$work/$case"
    pipeline "$work/$case" "$file"
    # The copy is written out before the timed run, so its writeback does not land in that
    # run's fsyncs (a scheduled run does not start behind a fresh copy of its own database).
    sync
    measure "highwater second run ($case)" - "$bin" run "$work/$case/pipeline.toml" --progress none | tee -a "$work/log"
    if [ -n "${DLT_PYTHON:-}" ]; then
      rm -rf "$work/dlt-$case" && cp -r "$work/dlt-first" "$work/dlt-$case"
      sync
      measure "dlt second run ($case)" - "${dlt[@]}" "$file" --workdir "$work/dlt-$case" --keep | tee -a "$work/log"
      ratios+=("$(awk "BEGIN{print $(seconds "dlt second run ($case)") / $(seconds "highwater second run ($case)")}")")
    fi
  done
  if [ "${#ratios[@]}" -gt 0 ]; then
    printf '%s\n' "${ratios[@]}" | sort -g | awk -v c="$case" '{ r[NR] = $1 } END {
      m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
      printf "second run (%s): dlt / highwater, median of %d pairs: %.1fx (%.1fx to %.1fx)\n", c, NR, m, r[1], r[NR] }'
  fi
done
