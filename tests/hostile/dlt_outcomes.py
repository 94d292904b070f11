#!/usr/bin/env python3
"""Runs real dlt 1.31.0 on every case of tests/hostile/cases/ the way a dlt user loads a JSON
Lines file (dlt.sources.filesystem + read_jsonl, into DuckDB) and writes what happened to
dlt_outcomes.json: the error dlt raised, or the tables it loaded (long strings as their length).
The README's table "Hostile and odd input" and crates/highwater-cli/tests/hostile.rs are decided
against this file.

usage: ~/.cache/dlt-venv/bin/python tests/hostile/dlt_outcomes.py
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")

import dlt  # noqa: E402
import duckdb  # noqa: E402
from dlt.sources.filesystem import filesystem, read_jsonl  # noqa: E402


def render(v):
    if isinstance(v, str) and len(v) > 60:
        return "<text of %d characters>" % len(v)
    if isinstance(v, (int, float, bool)) or v is None or isinstance(v, str):
        return v
    return str(v)


def run_case(name, hints, cases):
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "x.duckdb")
        pipeline = dlt.pipeline(pipeline_name="hostile", destination=dlt.destinations.duckdb(db),
                                pipelines_dir=tmp, dataset_name="raw")
        files = filesystem(bucket_url=cases, file_glob=name + ".jsonl")
        resource = (files | read_jsonl()).with_name("items")
        kw = {}
        if "write_disposition" in hints:
            kw["write_disposition"] = hints["write_disposition"]
        if "primary_key" in hints:
            kw["primary_key"] = hints["primary_key"]
        if "incremental" in hints:
            kw["incremental"] = dlt.sources.incremental(**hints["incremental"])
        if kw:
            resource.apply_hints(**kw)
        try:
            info = pipeline.run(resource)
        except Exception as ex:  # record the root cause
            cause = ex
            while getattr(cause, "__cause__", None) is not None:
                cause = cause.__cause__
            step = getattr(ex, "step", None)
            return {"error": "%s: %s" % (type(cause).__name__, str(cause).splitlines()[0][:300]),
                    "step": step}
        out = {"loads": len(info.loads_ids), "tables": {}}
        if not os.path.exists(db):
            return out
        con = duckdb.connect(db, read_only=True)
        for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' "
                                "AND table_name NOT LIKE '_dlt%' ORDER BY 1").fetchall():
            cols = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' "
                               "AND table_name = ? ORDER BY ordinal_position", [t]).fetchall()
            keep = [c for c, _ in cols if not c.startswith("_dlt_")]
            select = ", ".join('"%s"' % c.replace('"', '""') for c in keep)
            rows = con.execute('SELECT %s FROM raw."%s" ORDER BY ALL' % (select, t)).fetchall()
            out["tables"][t] = {"columns": [[c, ty] for c, ty in cols],
                                "rows": [[render(v) for v in r] for r in rows]}
        con.close()
        return out


def main():
    subprocess.run([sys.executable, os.path.join(HERE, "make_cases.py")], check=True)
    cases = os.path.join(HERE, "cases")
    with open(os.path.join(cases, "cases.json")) as f:
        spec = json.load(f)
    outcomes = {"dlt_version": dlt.__version__}
    for name in sorted(spec):
        print("case", name, file=sys.stderr)
        outcomes[name] = run_case(name, spec[name], cases)
    with open(os.path.join(HERE, "dlt_outcomes.json"), "w") as f:
        json.dump(outcomes, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
