#!/usr/bin/env bash
# SQL source benchmark: a PostgreSQL table of N rows (a fresh cluster from Debian's postgresql
# package, started here on a free port) loaded with `highwater run` into a fresh DuckDB file, as a
# whole process; prints wall seconds, rows/s and peak RSS. With DLT_PYTHON set (a python with dlt
# 1.31.0, SQLAlchemy 2.0 and psycopg2), dlt's sql_table loads the same table in the same run.
#
#   bash bench/sql.sh 1000000
#   DLT_PYTHON=~/.cache/dlt-venv/bin/python bash bench/sql.sh 1000000
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-1000000}

start_postgres
"$pg_bin/psql" -q "$url" <<SQL
CREATE TABLE orders AS
SELECT i::bigint AS id,
       'customer-' || (i % 5000) AS customer,
       (i % 100000)::numeric(10, 2) / 100 AS amount,
       i % 3 = 0 AS paid,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' AS updated_at,
       jsonb_build_object('sku', 'A-' || (i % 97), 'qty', i % 7) AS line
FROM generate_series(1, $N) AS i;
ALTER TABLE orders ADD PRIMARY KEY (id);
SQL
echo "table: orders, $N rows"

mkdir -p "$work/hw"
cat >"$work/hw/pipeline.toml" <<TOML
[pipeline]
name = "bench_sql"
destination = "duckdb:bench.duckdb"
dataset = "shop"
working_dir = "work"

[[resources]]
name = "orders"

[resources.source]
kind = "sql"
connection = "$url"
table = "orders"

[resources.incremental]
cursor_path = "updated_at"
initial_value = "2024-01-01T00:00:00Z"
TOML
measure "highwater sql" "$N" "$bin" run "$work/hw/pipeline.toml" --progress none

if [ -n "${DLT_PYTHON:-}" ]; then
  cat >"$work/dlt_sql.py" <<PY
import datetime, os, sys
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
import dlt
from dlt.sources.sql_database import sql_table
table = sql_table(credentials="${url/postgres:/postgresql:}", table="orders",
                  incremental=dlt.sources.incremental("updated_at",
                      initial_value=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)))
pipeline = dlt.pipeline("bench_sql_dlt", pipelines_dir="$work/dlt",
                        destination=dlt.destinations.duckdb("$work/dlt.duckdb"), dataset_name="shop")
pipeline.run(table, loader_file_format="parquet")
PY
  measure "dlt sql_table" "$N" "$DLT_PYTHON" "$work/dlt_sql.py"
fi
