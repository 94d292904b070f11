#!/usr/bin/env bash
# Destination benchmark: N generated GitHub-like events (../shared/bench/gen_events.py) loaded
# with `highwater run` as whole processes into
#   - PostgreSQL (a fresh cluster from Debian's postgresql package, started here): append and
#     merge, side by side with psql's \copy of the same flattened root and child rows (exported
#     from highwater's own tables, loaded into empty copies of them: the raw COPY floor), and
#     with dlt's postgres destination when DLT_PYTHON has dlt[postgres] 1.31.0;
#   - a local Parquet lake (filesystem destination), side by side with the DuckDB destination.
# Prints wall seconds, root rows/s and peak RSS.
#
#   bash bench/destinations.sh 1000000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python bash bench/destinations.sh 1000000
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-1000000}

data="$cache/events-$N.jsonl"
[ -s "$data" ] || python3 "$shared/bench/gen_events.py" "$N" -o "$data"
echo "data: $data ($(du -h "$data" | cut -f1), $N events)"

start_postgres max_wal_size=4GB
psql() { "$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$url" "$@"; }

pipeline() { # pipeline DIR DESTINATION DISPOSITION
  mkdir -p "$1"
  cat >"$1/pipeline.toml" <<TOML
[pipeline]
name = "bench"
destination = "$2"
dataset = "events_$3"
working_dir = "work"

[[resources]]
name = "events"
write_disposition = "$3"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "$data"
TOML
}

tables="events events__payload__commits events__labels"
for disposition in append merge; do
  pipeline "$work/pg-$disposition" "$url?sslmode=disable" "$disposition"
  measure "highwater postgres $disposition" "$N" "$bin" run "$work/pg-$disposition/pipeline.toml" --progress none
done

# The floor: psql's \copy of the same rows into empty copies of the same tables.
psql -c "CREATE SCHEMA raw"
for t in $tables; do
  psql -c "CREATE TABLE raw.\"$t\" (LIKE events_append.\"$t\")"
  psql -c "\\copy events_append.\"$t\" TO '$work/$t.csv' WITH (FORMAT csv)"
done
cat >"$work/copy.sh" <<SH
#!/usr/bin/env bash
set -e
for t in $tables; do
  "$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$url" -c "\\\\copy raw.\"\$t\" FROM '$work/\$t.csv' WITH (FORMAT csv)"
done
SH
measure "psql \\copy of the flattened rows" "$N" bash "$work/copy.sh"

if [ -n "${DLT_PYTHON:-}" ]; then
  cat >"$work/dlt_pg.py" <<PY
import json, os
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
import dlt

@dlt.resource(name="events", primary_key="id")
def events():
    with open("$data", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)

pipeline = dlt.pipeline("bench_dlt", pipelines_dir="$work/dlt",
                        destination=dlt.destinations.postgres("${url/postgres:/postgresql:}".replace("postgres@", "postgres:bench@")),
                        dataset_name="dlt_events")
pipeline.run(events(), write_disposition="append")
PY
  measure "dlt postgres append (insert_values)" "$N" "$DLT_PYTHON" "$work/dlt_pg.py"
fi

pipeline "$work/duckdb" "duckdb:bench.duckdb" append
measure "highwater duckdb append" "$N" "$bin" run "$work/duckdb/pipeline.toml" --progress none
pipeline "$work/lake" "filesystem:lake" append
measure "highwater filesystem append" "$N" "$bin" run "$work/lake/pipeline.toml" --progress none
