#!/usr/bin/env bash
# Crash soak (outside CI): events merged by id and loaded incrementally on ts into DuckDB, in
# BATCHES batches of KILLS runs. Each run first gets a new file of ROWS events (half new ids, half
# updates of earlier ids), then is killed with SIGKILL at a random moment of its work; the next run
# finishes what it left and takes the next file. Each batch ends with a run to the end. A reference
# pipeline loads the same files, one uninterrupted run per file; the two datasets are compared row
# by row. Prints the kills, the rows, and the rows lost and duplicated (both must be 0).
#
#   bash bench/soak.sh                 # 10 batches x 25 runs: 250 kills (a run that ended first is counted apart)
#   BATCHES=20 KILLS=20 ROWS=5000 bash bench/soak.sh
#
# Reads the databases with Python's duckdb module: SOAK_PYTHON (default the dlt venv's python,
# ~/.cache/dlt-venv/bin/python, made by ../shared/bench/setup-dlt.sh, which has it).
set -euo pipefail
. "$(dirname "$0")/common.sh"
BATCHES=${BATCHES:-10}
KILLS=${KILLS:-25}
ROWS=${ROWS:-2000}
PY=${SOAK_PYTHON:-$HOME/.cache/dlt-venv/bin/python}
"$PY" -c "import duckdb" 2>/dev/null || { echo "soak: $PY has no duckdb module (set SOAK_PYTHON)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy of the binary: another build into the shared target directory cannot swap it mid-soak.
cp "$bin" "$work/highwater"
bin="$work/highwater"

# File f: ROWS events with ts after every earlier file's; odd lines update an id of an earlier
# file (several lines of one file may update the same id: the last one wins, in both pipelines).
make_file() {
  "$PY" - "$1" "$ROWS" >"$2" <<'PY'
import json, random, sys
f, n = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(f)
for i in range(n):
    if f > 0 and i % 2:
        id = rnd.randrange(0, f * n)          # an update of an earlier event
    else:
        id = f * n + i                        # a new event
    print(json.dumps({"id": id, "ts": f * n + i, "file": f,
                      "payload": {"v": rnd.random(), "note": "x" * rnd.randrange(0, 200)},
                      "tags": ["t%d" % (id % 7), "f%d" % f]}))
PY
}

pipeline() {
  mkdir -p "$1/data"
  cat >"$1/pipeline.toml" <<TOML
[pipeline]
name = "soak"
destination = "duckdb:soak.duckdb"
dataset = "raw"
working_dir = "work"

[[resources]]
name = "events"
write_disposition = "merge"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"

[resources.incremental]
cursor_path = "ts"
initial_value = -1
TOML
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The newest package the soak pipeline loaded ("" before the first).
newest_load() { { ls "$work/soak/work/packages/loaded" 2>/dev/null || true; } | sort | tail -1; }

# Where a kill landed, told by the last stage the killed run logged as done (and by whether a
# load of it committed): counted in $stages.
declare -A stages=()
landed() {
  local last stage
  last=$(grep -oE '^(extract|normalize|load):' "$work/err" | tail -1 || true)
  case $last in
    "") stage="before a stage ended" ;;
    extract:) stage="after an extract, before its normalize ended" ;;
    normalize:) stage="after a normalize, before its load ended" ;;
    load:) stage="after a load committed" ;;
  esac
  if [ "$(newest_load)" != "$1" ]; then stage="after a load committed"; fi
  stages[$stage]=$(( ${stages[$stage]:-0} + 1 ))
}

pipeline "$work/reference"
pipeline "$work/soak"
kills=0
finished=0
files=0
started=$(date +%s)
for b in $(seq 0 $((BATCHES - 1))); do
  for k in $(seq 1 "$KILLS"); do
    name=$(printf 'events-%05d.jsonl' "$files")
    make_file "$files" "$work/$name"
    files=$((files + 1))
    cp "$work/$name" "$work/reference/data/"
    mv "$work/$name" "$work/soak/data/"
    # The uninterrupted run of this file says how long a run takes: the kill lands inside it.
    t0=$(now_ms)
    "$bin" run "$work/reference/pipeline.toml" --progress none >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    span_ms=$(( $(now_ms) - t0 + 1 ))
    delay_ms=$(( (RANDOM * 32768 + RANDOM) % span_ms ))
    before=$(newest_load)
    "$bin" run "$work/soak/pipeline.toml" --progress log >/dev/null 2>"$work/err" &
    pid=$!
    sleep "$(awk "BEGIN{print $delay_ms / 1000}")"
    kill -9 "$pid" 2>/dev/null || true
    status=0
    wait "$pid" 2>/dev/null || status=$?
    # 137: killed by SIGKILL; 0: the run had ended before its kill; anything else is a failure.
    case $status in
      137) kills=$((kills + 1)); landed "$before" ;;
      0) finished=$((finished + 1)) ;;
      *) echo "soak: a run after $kills kills failed (exit $status):" >&2; cat "$work/err" >&2; exit 1 ;;
    esac
  done
  "$bin" run "$work/soak/pipeline.toml" --progress none >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  echo "batch $b: $files files, $kills kills, $finished runs ended before their kill"
done
for stage in "before a stage ended" "after an extract, before its normalize ended" \
  "after a normalize, before its load ended" "after a load committed"; do
  echo "kills $stage: ${stages[$stage]:-0}"
done

# One more run: nothing must be left to load.
left=$("$bin" run "$work/soak/pipeline.toml" --progress none --json)
case $left in
  *'"load_ids":[]'*) ;;
  *) echo "soak: a run after the last batch still loaded something: $left" >&2; exit 1 ;;
esac

"$PY" - "$work/reference/soak.duckdb" "$work/soak/soak.duckdb" "$kills" "$(( $(date +%s) - started ))" "$finished" <<'PY'
import duckdb, sys
ref_path, soak_path, kills, secs, finished = sys.argv[1:6]
def content(path):
    c = duckdb.connect(path, read_only=True)
    events = c.execute("SELECT id, ts, file, payload__v, payload__note FROM raw.events").fetchall()
    tags = c.execute("SELECT e.id, t.value, t._dlt_list_idx FROM raw.events__tags t "
                     "JOIN raw.events e ON t._dlt_root_id = e._dlt_id").fetchall()
    orphans = c.execute("SELECT count(*) FROM raw.events__tags t WHERE NOT EXISTS "
                        "(SELECT 1 FROM raw.events e WHERE e._dlt_id = t._dlt_root_id)").fetchone()[0]
    loads = c.execute("SELECT count(*) - count(DISTINCT load_id) FROM raw._dlt_loads").fetchone()[0]
    return events, tags, orphans, loads
from collections import Counter
re, rt, _, _ = content(ref_path)
se, st, orphans, twice = content(soak_path)
def diff(ref, soak):
    r, s = Counter(ref), Counter(soak)
    lost = sum((r - s).values())
    dup = sum((s - r).values())
    return lost, dup
el, ed = diff(re, se)
tl, td = diff(rt, st)
print(f"kills: {kills} ({finished} runs ended before their kill) in {secs} s; events: {len(re)} expected, {len(se)} loaded, lost {el}, duplicated or altered {ed}; "
      f"tags: {len(rt)} expected, lost {tl}, duplicated or altered {td}; orphan tags {orphans}; loads committed twice {twice}")
sys.exit(0 if (el, ed, tl, td, orphans, twice) == (0, 0, 0, 0, 0, 0) else 1)
PY
