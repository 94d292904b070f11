#!/usr/bin/env bash
# History benchmark: two snapshots of N generated GitHub-like events (../shared/bench/gen_events.py;
# the second changes 10 % of them, drops 1 % and adds 1 % new ones) loaded with `highwater run`
# as whole processes, merged with `scd2` (versions with validity intervals) and, for comparison,
# with `delete-insert`, into DuckDB and into PostgreSQL (a fresh cluster of Debian's postgresql
# package, started here). Prints wall seconds, root rows/s and peak RSS of each load. With
# DLT_PYTHON (a Python with dlt 1.31.0 and pyarrow), dlt loads the same two snapshots with its scd2
# strategy into DuckDB (parquet, its fastest setting), each run a whole process. Last, the
# versions each scd2 history holds and how many are open, against what the snapshots make.
#
#   bash bench/scd2.sh 100000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python bash bench/scd2.sh 100000
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-100000}

first="$cache/events-$N.jsonl"
[ -s "$first" ] || python3 "$shared/bench/gen_events.py" "$N" -o "$first"
second="$cache/events-$N-next-snapshot.jsonl"
[ -s "$second" ] || python3 - "$first" "$second" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(src, encoding="utf-8")]
last = max(r["id"] for r in rows)
with open(dst, "w", encoding="utf-8") as out:
    for i, row in enumerate(rows):
        if i % 100 == 7:
            continue  # 1 % gone
        if i % 10 == 3:
            row["type"] = row["type"] + "Changed"  # 10 % changed
        out.write(json.dumps(row) + "\n")
    for i, row in enumerate(rows[: len(rows) // 100]):  # 1 % new
        row = dict(row, id=last + 1 + i)
        out.write(json.dumps(row) + "\n")
PY
echo "data: $first and $second ($N events each)"

start_postgres max_wal_size=4GB

pipeline() { # pipeline DIR DESTINATION STRATEGY
  mkdir -p "$1/data"
  cat >"$1/pipeline.toml" <<TOML
[pipeline]
name = "bench"
destination = "$2"
dataset = "events_${3//-/_}"
working_dir = "work"

[[resources]]
name = "events"
write_disposition = "merge"
merge_strategy = "$3"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"
skip_loaded_files = true
TOML
}

for destination in duckdb postgres; do
  for strategy in scd2 delete-insert; do
    dir="$work/$destination-$strategy"
    case $destination in
      duckdb) spec="duckdb:bench.duckdb" ;;
      postgres) spec="$url?sslmode=disable" ;;
    esac
    pipeline "$dir" "$spec" "$strategy"
    ln -s "$first" "$dir/data/1.jsonl"
    measure "$destination $strategy, snapshot 1" "$N" "$bin" run "$dir/pipeline.toml" --progress none
    ln -s "$second" "$dir/data/2.jsonl"
    measure "$destination $strategy, snapshot 2" "$N" "$bin" run "$dir/pipeline.toml" --progress none
  done
done

# The history each scd2 load left: every version, and the open ones (the second snapshot's rows).
echo "scd2 history (expected $((N + N / 10 + N / 100)) versions, $N open):"
versions="SELECT count(*), count(*) FILTER (WHERE _dlt_valid_to IS NULL) FROM events_scd2.events"
echo "  postgres: $("$pg_bin/psql" -At -F ' versions, ' "$url" -c "$versions") open"

if [ -n "${DLT_PYTHON:-}" ]; then
  cat >"$work/dlt_scd2.py" <<'PY'
import json, os, sys
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
import dlt

path, workdir = sys.argv[1], sys.argv[2]

@dlt.resource(name="events", write_disposition={"disposition": "merge", "strategy": "scd2"})
def events():
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)

pipeline = dlt.pipeline("bench_dlt", pipelines_dir=os.path.join(workdir, "pipelines"),
                        destination=dlt.destinations.duckdb(os.path.join(workdir, "bench.duckdb")),
                        dataset_name="events_scd2")
pipeline.run(events(), loader_file_format="parquet")
PY
  measure "dlt duckdb scd2, snapshot 1" "$N" "$DLT_PYTHON" "$work/dlt_scd2.py" "$first" "$work/dlt"
  measure "dlt duckdb scd2, snapshot 2" "$N" "$DLT_PYTHON" "$work/dlt_scd2.py" "$second" "$work/dlt"
fi

if [ -n "${DLT_PYTHON:-}" ]; then
  for db in "$work/duckdb-scd2/bench.duckdb" "$work/dlt/bench.duckdb"; do
    "$DLT_PYTHON" -c 'import duckdb, sys; v, o = duckdb.connect(sys.argv[1], read_only=True).execute(sys.argv[2]).fetchone(); print(f"  {sys.argv[1]}: {v} versions, {o} open")' "$db" "$versions"
  done
fi
