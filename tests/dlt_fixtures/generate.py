#!/usr/bin/env python3
"""Generate golden fixtures by running the real Python dlt (1.31.0) against a destination.

For every folder tests/dlt_fixtures/scenarios/<name>/ that holds a scenario.json, run its runs
through one dlt pipeline (fresh pipelines_dir + destination in a temp dir) and write
<name>/expected.json (DuckDB), <name>/expected.postgres.json (--destination postgres: a fresh
PostgreSQL cluster started by this script, one database per scenario; column types written under
DuckDB's names, as the Rust tests read PostgreSQL back) or <name>/expected.filesystem.json
(--destination filesystem: a local lake of Parquet files, read back through DuckDB views over
each table folder, `union_by_name`) with the resulting dataset contents.

usage: <venv>/bin/python tests/dlt_fixtures/generate.py [--destination duckdb|postgres|filesystem] [scenario ...]
(venv made by ../shared/bench/setup-dlt.sh; postgres needs `pip install "dlt[postgres]==1.31.0"`)
"""
import base64
import datetime
import decimal
import json
import os
import sys
import tempfile
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "scenarios")
SQL_SCENARIOS = os.path.join(HERE, "sql_scenarios")

# keep dlt away from any user/project config and telemetry
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

import dlt  # noqa: E402
import duckdb  # noqa: E402

SYSTEM_TABLES = ("_dlt_loads", "_dlt_version", "_dlt_pipeline_state")


def read_jsonl(path):
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                items.append(json.loads(line))
    return items


def make_incremental(spec, resource_pk):
    kw = {}
    for key in ("cursor_path", "initial_value", "end_value", "last_value_func", "row_order",
                "on_cursor_value_missing", "lag", "range_start", "range_end"):
        if spec.get(key) is not None:
            kw[key] = spec[key]
    pk = spec.get("primary_key")
    if pk is not None:
        # [] / "" disables dedup in dlt (empty tuple)
        kw["primary_key"] = tuple(pk) if isinstance(pk, list) else pk
    return dlt.sources.incremental(**kw)


def make_resource(run, items, schema_name):
    def _gen():
        # one page per file is already merged into `items`; yield as a single page
        yield items

    kwargs = {"name": run["resource"]}
    wd = run.get("write_disposition") or "append"
    if run.get("merge_strategy"):
        kwargs["write_disposition"] = {"disposition": wd, "strategy": run["merge_strategy"]}
        # scd2 options, with dlt's names
        for key in ("validity_column_names", "active_record_timestamp", "boundary_timestamp",
                    "row_version_column_name"):
            if key in run:
                kwargs["write_disposition"][key] = run[key]
    else:
        kwargs["write_disposition"] = wd
    if run.get("primary_key"):
        kwargs["primary_key"] = list(run["primary_key"])
    if run.get("merge_key"):
        kwargs["merge_key"] = list(run["merge_key"])
    if run.get("columns"):
        kwargs["columns"] = run["columns"]
    if run.get("max_table_nesting") is not None:
        kwargs["max_table_nesting"] = run["max_table_nesting"]
    tn = run.get("table_name")
    if tn is not None:
        if tn.startswith("{") and tn.endswith("}"):
            field = tn[1:-1]
            kwargs["table_name"] = lambda item, _f=field: item[_f]
        else:
            kwargs["table_name"] = tn
    res = dlt.resource(_gen, **kwargs)
    if run.get("incremental"):
        res.apply_hints(incremental=make_incremental(run["incremental"], run.get("primary_key")))
    if run.get("root_key"):
        # root_key is a source-level setting (normalizer config root_key_propagation)
        @dlt.source(name=schema_name, root_key=True)
        def _src():
            return res

        return _src()
    return res


def render(value, data_type):
    if value is None:
        return None
    dt = data_type.upper()
    if dt == "JSON":
        return json.loads(value) if isinstance(value, str) else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            return value.astimezone(datetime.timezone.utc).isoformat()
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return value
    return str(value)


def dump_dataset(db_path, dataset):
    con = duckdb.connect(db_path, read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
            [dataset]).fetchall()]
        out = {"tables": {}}
        for t in tables:
            if t in SYSTEM_TABLES:
                continue
            cols = con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [dataset, t]).fetchall()
            qt = '"%s"."%s"' % (dataset.replace('"', '""'), t.replace('"', '""'))
            rows = con.execute("SELECT * FROM %s ORDER BY ALL" % qt).fetchall()
            out["tables"][t] = {
                "columns": [{"name": c, "type": ty, "nullable": nl == "YES"} for c, ty, nl in cols],
                "rows": [{c[0]: render(v, c[1]) for c, v in zip(cols, row)} for row in rows],
            }

        def count(t):
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [dataset, t]).fetchone()[0]
            if not exists:
                return 0
            return con.execute('SELECT count(*) FROM "%s"."%s"' % (dataset, t)).fetchone()[0]

        out["loads"] = count("_dlt_loads")
        out["state_rows"] = count("_dlt_pipeline_state")
        out["version_rows"] = count("_dlt_version")
        return out
    finally:
        con.close()


# PostgreSQL type names as DuckDB names the same types (the Rust tests read PostgreSQL the same way).
PG_TO_DUCKDB = {
    "bigint": "BIGINT", "integer": "INTEGER", "smallint": "SMALLINT",
    "character varying": "VARCHAR", "text": "VARCHAR", "double precision": "DOUBLE",
    "boolean": "BOOLEAN", "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "timestamp without time zone": "TIMESTAMP", "date": "DATE",
    "time without time zone": "TIME", "jsonb": "JSON", "json": "JSON", "bytea": "BLOB",
}


def dump_postgres(dsn, dataset):
    import psycopg2
    con = psycopg2.connect(dsn)
    try:
        cur = con.cursor()
        cur.execute("SET TimeZone='UTC'")
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
                    [dataset])
        tables = [r[0] for r in cur.fetchall()]
        out = {"tables": {}}
        for t in tables:
            if t in SYSTEM_TABLES:
                continue
            cur.execute(
                "SELECT column_name, data_type, is_nullable, numeric_precision, numeric_scale "
                "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position", [dataset, t])
            cols = []
            for name, ty, nl, prec, scale in cur.fetchall():
                ty = "DECIMAL(%s,%s)" % (prec, scale) if ty == "numeric" else PG_TO_DUCKDB.get(ty, ty.upper())
                cols.append((name, ty, nl))
            cur.execute('SELECT * FROM "%s"."%s"' % (dataset, t))
            rows = cur.fetchall()
            out["tables"][t] = {
                "columns": [{"name": c, "type": ty, "nullable": nl == "YES"} for c, ty, nl in cols],
                "rows": [{c[0]: render(v, c[1]) for c, v in zip(cols, row)} for row in rows],
            }

        def count(t):
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                        [dataset, t])
            if not cur.fetchone()[0]:
                return 0
            cur.execute('SELECT count(*) FROM "%s"."%s"' % (dataset, t))
            return cur.fetchone()[0]

        out["loads"] = count("_dlt_loads")
        out["state_rows"] = count("_dlt_pipeline_state")
        out["version_rows"] = count("_dlt_version")
        return out
    finally:
        con.close()


class PgCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl from Debian's package)."""

    def __init__(self):
        import glob
        import socket
        import subprocess
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not bins:
            raise SystemExit("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="dltfx_pg_")
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            import pwd
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        data = os.path.join(self.dir, "data")
        self._run(["initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone=UTC" % (self.port, self.dir)
        self._run(["pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(self.dir, "log"), "-w", "start"])
        self.n = 0
        self.subprocess = subprocess

    def _run(self, args):
        import subprocess
        cmd = [os.path.join(self.bin, args[0])] + args[1:]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def new_database(self):
        import psycopg2
        self.n += 1
        name = "fx_%d" % self.n
        con = psycopg2.connect(self.dsn("postgres"))
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE %s" % name)
        con.close()
        return self.dsn(name)

    def dsn(self, db):
        # dlt wants a password; trust authentication ignores it.
        return "postgresql://postgres:fixture@127.0.0.1:%d/%s" % (self.port, db)

    def stop(self):
        import shutil
        self._run(["pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "immediate", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


PG = None


def dump_lake(root, dataset):
    """The lake as the Rust tests read it: DuckDB views over each table folder's files."""
    import glob
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        base = os.path.join(root, dataset)
        out = {"tables": {}}
        counts = {}
        for path in sorted(glob.glob(os.path.join(base, "*"))):
            name = os.path.basename(path)
            if not os.path.isdir(path):
                continue
            if name.startswith("_dlt_"):
                counts[name] = len(glob.glob(os.path.join(path, "*.jsonl")))
                continue
            if not glob.glob(os.path.join(path, "*.parquet")):
                continue
            rel = "SELECT * FROM read_parquet('%s/*.parquet', union_by_name = true)" % path
            con.execute('CREATE OR REPLACE VIEW v AS ' + rel)
            cols = con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'v' ORDER BY ordinal_position").fetchall()
            rows = con.execute("SELECT * FROM v ORDER BY ALL").fetchall()
            out["tables"][name] = {
                "columns": [{"name": c, "type": ty, "nullable": nl == "YES"} for c, ty, nl in cols],
                "rows": [{c[0]: render(v, c[1]) for c, v in zip(cols, row)} for row in rows],
            }
        out["loads"] = counts.get("_dlt_loads", 0)
        out["state_rows"] = counts.get("_dlt_pipeline_state", 0)
        out["version_rows"] = counts.get("_dlt_version", 0)
        return out
    finally:
        con.close()


def run_scenario(folder, destination="duckdb"):
    with open(os.path.join(folder, "scenario.json"), encoding="utf-8") as f:
        scenario = json.load(f)
    pipeline_name = scenario["pipeline"]
    dataset = scenario["dataset"]
    with tempfile.TemporaryDirectory(prefix="dltfx_") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # no stray .dlt/ config is picked up
        try:
            db_path = os.path.join(tmp, "fixture.duckdb")
            lake = os.path.join(tmp, "lake")
            if destination == "postgres":
                dsn = PG.new_database()
                dest = dlt.destinations.postgres(credentials=dsn)
            elif destination == "filesystem":
                dest = dlt.destinations.filesystem(bucket_url=lake)
            else:
                dest = dlt.destinations.duckdb(db_path)
            pipeline = dlt.pipeline(
                pipeline_name=pipeline_name,
                pipelines_dir=os.path.join(tmp, "pipelines"),
                destination=dest,
                dataset_name=dataset,
            )
            run_results = []
            for run in scenario["runs"]:
                items = []
                for fn in run["files"]:
                    items.extend(read_jsonl(os.path.join(folder, fn)))
                try:
                    data = make_resource(run, items, pipeline_name)
                    if destination == "filesystem":
                        info = pipeline.run(data, loader_file_format="parquet")
                    else:
                        info = pipeline.run(data)
                    run_results.append(len(info.loads_ids))
                except Exception as ex:  # record, don't fail
                    # unwrap PipelineStepFailed to the root cause
                    cause = ex
                    while getattr(cause, "__cause__", None) is not None:
                        cause = cause.__cause__
                    msg = "%s: %s" % (type(cause).__name__, str(cause))
                    if cause is not ex:
                        step = getattr(ex, "step", None)
                        msg = "%s (%s%s)" % (msg, type(ex).__name__, " at " + step if step else "")
                    run_results.append({"error": msg})
                    print("  run raised:", msg.splitlines()[0][:300], file=sys.stderr)
            schema_name = pipeline.default_schema_name
            out = {"dlt_version": dlt.__version__, "dataset": dataset, "schema": schema_name}
            if destination == "postgres":
                out.update(dump_postgres(dsn, dataset))
            elif destination == "filesystem":
                out.update(dump_lake(lake, dataset))
            else:
                out.update(dump_dataset(db_path, dataset) if os.path.exists(db_path) else
                           {"tables": {}, "loads": 0, "state_rows": 0, "version_rows": 0})
            out["run_load_ids"] = run_results
        finally:
            os.chdir(cwd)
    return out


def run_sql_scenario(folder):
    """A sql_scenarios/<name>/: each run applies its SQL script to one SQLite file, then loads the
    table with dlt's sql_table (default backend "sqlalchemy", reflection level "full").
    Needs SQLAlchemy 2.0 in the venv (pip install "sqlalchemy==2.0.*")."""
    import sqlite3
    from dlt.sources.sql_database import sql_table

    with open(os.path.join(folder, "scenario.json"), encoding="utf-8") as f:
        scenario = json.load(f)
    dataset = scenario["dataset"]
    with tempfile.TemporaryDirectory(prefix="dltfx_") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            db_path = os.path.join(tmp, "fixture.duckdb")
            source_db = os.path.join(tmp, "source.db")
            pipeline = dlt.pipeline(
                pipeline_name=scenario["pipeline"],
                pipelines_dir=os.path.join(tmp, "pipelines"),
                destination=dlt.destinations.duckdb(db_path),
                dataset_name=dataset,
            )
            inc = dict(scenario["incremental"])
            # A naive ISO string is compared with the naive datetimes SQLite DATETIME gives.
            inc["initial_value"] = datetime.datetime.fromisoformat(inc["initial_value"])
            run_results = []
            for script in scenario["runs"]:
                con = sqlite3.connect(source_db)
                with open(os.path.join(folder, script), encoding="utf-8") as f:
                    con.executescript(f.read())
                con.commit()
                con.close()
                table = sql_table(
                    credentials="sqlite:///" + source_db,
                    table=scenario["table"],
                    incremental=dlt.sources.incremental(**inc),
                    write_disposition=scenario.get("write_disposition", "append"),
                )
                info = pipeline.run(table)
                run_results.append(len(info.loads_ids))
            out = {"dlt_version": dlt.__version__, "dataset": dataset}
            out.update(dump_dataset(db_path, dataset))
            out["run_load_ids"] = run_results
        finally:
            os.chdir(cwd)
    return out


def main(argv):
    global PG
    args = argv[1:]
    destination = "duckdb"
    if args and args[0].startswith("--destination"):
        destination = args[0].split("=", 1)[1] if "=" in args[0] else args[1]
        args = args[1:] if "=" in args[0] else args[2:]
    names = args or sorted(
        d for d in os.listdir(SCENARIOS)
        if os.path.isfile(os.path.join(SCENARIOS, d, "scenario.json")))
    names += sorted(
        "sql:" + d for d in os.listdir(SQL_SCENARIOS)
        if not args and destination == "duckdb"
        and os.path.isfile(os.path.join(SQL_SCENARIOS, d, "scenario.json")))
    if destination == "postgres":
        PG = PgCluster()
    try:
        return generate(names, destination)
    finally:
        if PG is not None:
            PG.stop()


def generate(names, destination):
    expected = "expected.json" if destination == "duckdb" else "expected.%s.json" % destination
    failed = False
    for name in names:
        folder = os.path.join(SCENARIOS, name)
        print("scenario", name, file=sys.stderr)
        try:
            if name.startswith("sql:"):
                folder = os.path.join(SQL_SCENARIOS, name[4:])
                out = run_sql_scenario(folder)
            else:
                out = run_scenario(folder, destination)
        except Exception:
            traceback.print_exc()
            failed = True
            continue
        with open(os.path.join(folder, expected), "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
