#!/usr/bin/env python3
"""Golden fixtures for taking over a dataset dlt created, and for handing it back (issue 18).

For every folder tests/dlt_fixtures/takeover/<name>/ with a scenario.json (two runs, in the format
of generate.py's scenarios), run the first run through real dlt 1.31.0 and record its whole
destination — every table of the dataset, system tables included, as column definitions and
rows — in `run1.<destination>.json`, so that the Rust test recreates it without Python. Then run
the second run through the same dlt pipeline and record dlt's tables (as generate.py records them)
with dlt's state and stored schema after it in `expected.<destination>.json`. The Rust test lets
highwater, with no working directory of its own, load the second run onto the recreated
destination and compares with dlt's two-run result.

Scenario options besides generate.py's run keys:
  "typed_cursor": "datetime" | "date"  the cursor field (and initial_value) of every item becomes a
                                        Python datetime (or date) before dlt sees it, as a database
                                        source yields them: dlt's state then holds typed values.
  "resource_state": {...}  (in a run)   state the resource keeps itself while its items pass (and a
                                        source-level "token"); "datetime:<iso>" strings are datetimes.
  "source_name": "gh"                   the resource runs in a dlt source of that name (which names
                                        the schema and the source state, not the pipeline).
  "break_paths": false                  the dataset's schema keeps `__` in nested keys, as one first
                                        written by a dlt before 1.4 (use_break_path_on_normalize).
  "legacy_hashes": true                 after run 1 the stored state's unique_hashes are rewritten
                                        in the format of dlt before 1.29 (20 characters), as a
                                        state written by an older dlt holds them.

The reverse direction: `typed_json.json` holds state documents with every typed value dlt
stores, each with dlt's typed JSON, its compressed form and dlt's version hash, and dlt's dedup
digests (current and pre-1.29) of sample keys; the Rust tests prove highwater writes the same.

usage: <venv>/bin/python tests/dlt_fixtures/takeover.py [--destination duckdb|postgres|filesystem] [name ...]
"""
import base64
import datetime
import decimal
import json
import os
import shutil
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as g  # noqa: E402  (sets dlt's environment and imports dlt)

import dlt  # noqa: E402
import duckdb  # noqa: E402
from dlt.common import json as dlt_json  # noqa: E402
from dlt.common.versioned_state import compress_state, decompress_state  # noqa: E402
from dlt.extract.utils import digest_dedup_value  # noqa: E402
from dlt.pipeline.state_sync import generate_pipeline_state_version_hash  # noqa: E402

TAKEOVER = os.path.join(HERE, "takeover")


class dlt_settings:
    """The dlt configuration a scenario asks for, while its runs go."""

    def __init__(self, scenario):
        self.env = {}
        if scenario.get("break_paths") is False:
            self.env["SCHEMA__USE_BREAK_PATH_ON_NORMALIZE"] = "false"

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def typed_items(items, scenario, cursor):
    """The cursor values as the Python type a database source yields."""
    kind = scenario.get("typed_cursor")
    if not kind:
        return items
    for item in items:
        if cursor in item and item[cursor] is not None:
            item[cursor] = to_typed(item[cursor], kind)
    return items


def to_typed(value, kind):
    if kind == "datetime":
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.date.fromisoformat(value)


def make_run(scenario, run, folder):
    items = []
    for fn in run["files"]:
        items.extend(g.read_jsonl(os.path.join(folder, fn)))
    run = json.loads(json.dumps(run))
    inc = run.get("incremental")
    if inc and scenario.get("typed_cursor"):
        typed_items(items, scenario, inc["cursor_path"])
        if inc.get("initial_value") is not None:
            inc["initial_value"] = to_typed(inc["initial_value"], scenario["typed_cursor"])
    resource = g.make_resource(run, items, scenario["pipeline"])
    custom = run.get("resource_state")
    if custom:
        # state a resource keeps itself (a page token, a datetime), set while its items pass
        def keep_state(item):
            dlt.current.resource_state().update(typed_values(custom))
            dlt.current.source_state().update({"token": "t-" + run["resource"]})
            return item

        resource.add_map(keep_state)
    if scenario.get("source_name"):
        # a dlt source of its own name: schema and source state are named after it
        @dlt.source(name=scenario["source_name"])
        def named_source():
            return resource

        return named_source()
    return resource


def typed_values(value):
    """`"datetime:<iso>"` strings as datetimes, in nested dicts and lists."""
    if isinstance(value, dict):
        return {k: typed_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed_values(v) for v in value]
    if isinstance(value, str) and value.startswith("datetime:"):
        return to_typed(value[len("datetime:"):], "datetime")
    return value


def dump_duckdb_destination(db_path, dataset):
    """Every table of the dataset: columns (DuckDB types) and rows, in a form SQL can insert."""
    con = duckdb.connect(db_path, read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
            [dataset]).fetchall()]
        out = {}
        for t in tables:
            cols = con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [dataset, t]).fetchall()
            rows = con.execute('SELECT * FROM "%s"."%s" ORDER BY ALL' % (dataset, t)).fetchall()
            out[t] = table_dump(cols, rows)
        return out
    finally:
        con.close()


def dump_postgres_destination(dsn, dataset):
    import psycopg2
    con = psycopg2.connect(dsn)
    try:
        cur = con.cursor()
        cur.execute("SET TimeZone='UTC'")
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
                    [dataset])
        out = {}
        for (t,) in cur.fetchall():
            cur2 = con.cursor()
            cur2.execute(
                "SELECT column_name, data_type, is_nullable, numeric_precision, numeric_scale, "
                "character_maximum_length FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", [dataset, t])
            cols = []
            for name, ty, nl, prec, scale, length in cur2.fetchall():
                if ty == "numeric":
                    ty = "numeric(%s,%s)" % (prec, scale)
                elif ty == "character varying" and length:
                    ty = "character varying(%s)" % length
                cols.append((name, ty, nl))
            # dlt declares `_dlt_id` UNIQUE on PostgreSQL
            cur2.execute(
                "SELECT k.column_name FROM information_schema.table_constraints c "
                "JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name "
                "AND k.table_schema = c.table_schema WHERE c.table_schema = %s AND c.table_name = %s "
                "AND c.constraint_type = 'UNIQUE'", [dataset, t])
            unique = {r[0] for r in cur2.fetchall()}
            cur2.execute('SELECT * FROM "%s"."%s"' % (dataset, t))
            rows = sorted(cur2.fetchall(), key=lambda r: json.dumps([str(v) for v in r]))
            out[t] = table_dump(cols, rows)
            for column in out[t]["columns"]:
                if column["name"] in unique:
                    column["unique"] = True
        return out
    finally:
        con.close()


def table_dump(cols, rows):
    return {
        "columns": [{"name": c, "type": ty, "nullable": nl == "YES"} for c, ty, nl in cols],
        "rows": [[g.render(v, c[1]) for c, v in zip(cols, row)] for row in rows],
    }


def newest_state_and_schema(pipeline):
    """dlt's newest committed state row (decoded to typed JSON) and newest stored schema."""
    with pipeline.destination_client() as client:
        state = client.get_stored_state(pipeline.pipeline_name)
        schema = client.get_stored_schema(pipeline.default_schema_name)
    decoded = decompress_state(state.state)
    return {
        "state": json.loads(dlt_json.typed_dumps(decoded)),
        "state_version": state.version,
        "schema": json.loads(schema.schema),
        "schema_version_hash": schema.version_hash,
    }


def rewrite_legacy_hashes(pipeline, db_path, dataset, scenario):
    """Turns the stored state's dedup hashes into the pre-1.29 format (20 characters) of the same
    rows, as a state written by dlt 1.28 holds them."""
    run = scenario["runs"][0]
    inc = run["incremental"]
    key = inc.get("primary_key") or run.get("primary_key")
    con = duckdb.connect(db_path)
    try:
        row = con.execute(
            'SELECT _dlt_id, state FROM "%s"._dlt_pipeline_state ORDER BY _dlt_load_id DESC LIMIT 1'
            % dataset).fetchone()
        state = decompress_state(row[1])
        items = []
        for fn in run["files"]:
            items.extend(g.read_jsonl(os.path.join(TAKEOVER, scenario["name"], fn)))
        resource = state["sources"][scenario["pipeline"]]["resources"][run["resource"]]
        entry = resource["incremental"][inc["cursor_path"]]
        last = entry["last_value"]
        at_last = [i for i in items if i.get(inc["cursor_path"]) == last]

        def value(item):
            # a key given as a list (as generate.py passes it) hashes as a list of values
            return [item[k] for k in key] if key else item

        entry["unique_hashes"] = sorted(digest_dedup_value(value(i), legacy=True) for i in at_last)
        assert all(len(h) == 20 for h in entry["unique_hashes"])
        state["_version_hash"] = generate_pipeline_state_version_hash(state)
        con.execute('UPDATE "%s"._dlt_pipeline_state SET state = ?, version_hash = ? WHERE _dlt_id = ?'
                    % dataset, [compress_state(state), state["_version_hash"], row[0]])
    finally:
        con.close()
    # the pipeline's local state must forget the hashes too: restore from the destination
    shutil.rmtree(pipeline.working_dir)


def run_takeover(folder, destination):
    with open(os.path.join(folder, "scenario.json"), encoding="utf-8") as f:
        scenario = json.load(f)
    scenario["name"] = os.path.basename(folder)
    dataset = scenario["dataset"]
    with tempfile.TemporaryDirectory(prefix="dltfx_takeover_") as tmp, dlt_settings(scenario):
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            db_path = os.path.join(tmp, "fixture.duckdb")
            lake = os.path.join(tmp, "lake")
            if destination == "postgres":
                dsn = g.PG.new_database()
                dest = dlt.destinations.postgres(credentials=dsn)
            elif destination == "filesystem":
                dest = dlt.destinations.filesystem(bucket_url=lake)
            else:
                dest = dlt.destinations.duckdb(db_path)
            pipelines_dir = os.path.join(tmp, "pipelines")

            def pipeline():
                return dlt.pipeline(pipeline_name=scenario["pipeline"], pipelines_dir=pipelines_dir,
                                    destination=dest, dataset_name=dataset)

            options = {"loader_file_format": "parquet"} if destination == "filesystem" else {}
            run1, run2 = scenario["runs"]
            p = pipeline()
            info1 = p.run(make_run(scenario, run1, folder), **options)
            if scenario.get("legacy_hashes"):
                rewrite_legacy_hashes(p, db_path, dataset, scenario)
                p = pipeline()
            if destination == "postgres":
                run1_dump = {"tables": dump_postgres_destination(dsn, dataset)}
            elif destination == "filesystem":
                run1_dump = {"files": lake_files(lake, dataset)}
            else:
                run1_dump = {"tables": dump_duckdb_destination(db_path, dataset)}
            run1_dump.update({"dlt_version": dlt.__version__, "dataset": dataset,
                              "load_ids": len(info1.loads_ids)})
            info2 = p.run(make_run(scenario, run2, folder), **options)
            if destination == "postgres":
                expected = g.dump_postgres(dsn, dataset)
            elif destination == "filesystem":
                expected = g.dump_lake(lake, dataset)
            else:
                expected = g.dump_dataset(db_path, dataset)
            expected.update({"dlt_version": dlt.__version__, "dataset": dataset,
                             "run_load_ids": [len(info2.loads_ids)]})
            expected.update(newest_state_and_schema(p))
        finally:
            os.chdir(cwd)
    return run1_dump, expected


def lake_files(lake, dataset):
    """Every file of the dataset's folder, base64, by path relative to the lake."""
    out = {}
    base = os.path.join(lake, dataset)
    for root, _, files in os.walk(base):
        for fn in sorted(files):
            path = os.path.join(root, fn)
            rel = os.path.relpath(path, lake)
            with open(path, "rb") as f:
                out[rel] = base64.b64encode(f.read()).decode("ascii")
    return dict(sorted(out.items()))


def typed_json_fixture():
    """State documents with the values dlt's typed JSON carries, as dlt encodes and hashes them."""
    utc = datetime.timezone.utc
    documents = [
        {"_state_version": 3, "_state_engine_version": 4, "_version_hash": "x",
         "pipeline_name": "p", "dataset_name": "d", "default_schema_name": "p", "schema_names": ["p"],
         "destination_type": "dlt.destinations.duckdb", "destination_name": None,
         "sources": {"p": {"resources": {"events": {"incremental": {"updated_at": {
             "initial_value": datetime.datetime(2024, 1, 1, tzinfo=utc),
             "last_value": datetime.datetime(2024, 3, 5, 10, 0, 0, 123456, tzinfo=utc),
             "unique_hashes": ["Tp44cKMYfAuJ", "AAAAAAAAAAAA"],
             "start_value": datetime.datetime(2024, 2, 1, 8, 30, tzinfo=utc)}}}}}}},
        {"_state_version": 1, "_state_engine_version": 4, "pipeline_name": "p",
         "sources": {"p": {"resources": {
             "days": {"incremental": {"day": {"initial_value": datetime.date(2024, 1, 1),
                                                "last_value": datetime.date(2024, 1, 9),
                                                "unique_hashes": [], "start_value": None}}},
             "naive": {"incremental": {"ts": {"last_value": datetime.datetime(2024, 1, 1, 12),
                                               "start_value": datetime.datetime(2024, 1, 1, 12, 0, 0, 5)}}},
             "money": {"incremental": {"amount": {"last_value": decimal.Decimal("12.50"),
                                                   "start_value": 1.5, "initial_value": 0}}},
             "custom": {"cursor": {"A": 3, "B": "Ünïcödé \" \\ \n \x01"}, "seen": [1, 2.25, 1e16, None, True],
                        "blob": b"\x00\x01binary", "id": uuid.UUID(int=42),
                        "at": datetime.time(10, 30, 1)},
         }}}},
    ]
    out = []
    for doc in documents:
        out.append({
            "typed_json": dlt_json.typed_dumps(doc),
            "compressed": compress_state(doc),
            "version_hash": generate_pipeline_state_version_hash(doc),
        })
    keys = [1, "abc", [1, "x"], {"b": 2, "a": [1.5, None]}, "Ünïcödé", 12345678901234, 2.5, True,
            "2024-01-01T00:00:00Z"]
    dedup = [{"key": k, "hash": digest_dedup_value(k), "legacy_hash": digest_dedup_value(k, legacy=True)}
             for k in keys]
    return {"dlt_version": dlt.__version__, "documents": out, "dedup_hashes": dedup}


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main(argv):
    args = argv[1:]
    destination = "duckdb"
    if args and args[0].startswith("--destination"):
        destination = args[0].split("=", 1)[1] if "=" in args[0] else args[1]
        args = args[1:] if "=" in args[0] else args[2:]
    names = args or sorted(d for d in os.listdir(TAKEOVER)
                           if os.path.isfile(os.path.join(TAKEOVER, d, "scenario.json")))
    if destination == "duckdb" and not args:
        write_json(os.path.join(TAKEOVER, "typed_json.json"), typed_json_fixture())
    if destination == "postgres":
        g.PG = g.PgCluster()
    failed = False
    try:
        for name in names:
            folder = os.path.join(TAKEOVER, name)
            with open(os.path.join(folder, "scenario.json"), encoding="utf-8") as f:
                if json.load(f).get("legacy_hashes") and destination != "duckdb":
                    continue  # the pre-1.29 state is written into DuckDB only
            print("takeover scenario", name, file=sys.stderr)
            try:
                run1, expected = run_takeover(folder, destination)
            except Exception:
                import traceback
                traceback.print_exc()
                failed = True
                continue
            write_json(os.path.join(folder, "run1.%s.json" % destination), run1)
            write_json(os.path.join(folder, "expected.%s.json" % destination), expected)
    finally:
        if g.PG is not None:
            g.PG.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
