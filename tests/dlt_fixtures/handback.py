#!/usr/bin/env python3
"""Hands a dataset back to real dlt after highwater loaded it, for every takeover scenario.

For each tests/dlt_fixtures/takeover/<name>/ (DuckDB): dlt loads the first run; the `highwater`
command loads the second run onto dlt's dataset with no working directory of its own; then dlt
loads the second run again, from a fresh pipelines dir (so it restores highwater's state and schema
from the destination) and from its own earlier pipelines dir (so it syncs the newer state). dlt must
read both, load no row a second time, and leave the tables equal to its own two-run result
(`expected.duckdb.json`). Then dlt loads one new item and must load exactly that.

This is the other half of the takeover test: the Rust test proves highwater writes the state dlt
would, this script proves dlt takes it. It needs Python and a built binary, so it is not part of
`cargo test`:

    cargo build --release --workspace
    ~/.cache/dlt-venv/bin/python tests/dlt_fixtures/handback.py $CARGO_TARGET_DIR/release/highwater [name ...]
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as g  # noqa: E402
import takeover as t  # noqa: E402

import dlt  # noqa: E402


def toml_value(value):
    return json.dumps(value)  # JSON strings, numbers and lists are TOML too


def pipeline_file(scenario, run, db_path):
    """The second run as a highwater pipeline file over the same JSON Lines files."""
    lines = [
        "[pipeline]",
        "name = %s" % toml_value(scenario["pipeline"]),
        "destination = %s" % toml_value("duckdb:" + db_path),
        "dataset = %s" % toml_value(scenario["dataset"]),
        "working_dir = \"work\"",
        "",
        "[[resources]]",
        "name = %s" % toml_value(run["resource"]),
        "write_disposition = %s" % toml_value(run.get("write_disposition") or "append"),
    ]
    if run.get("primary_key"):
        lines.append("primary_key = %s" % toml_value(run["primary_key"]))
    lines += ["", "[resources.source]", "kind = \"jsonl\"",
              "path = %s" % toml_value(run["files"][0]), ""]
    inc = run["incremental"]
    lines.append("[resources.incremental]")
    for key in ("cursor_path", "initial_value", "last_value_func", "range_start", "range_end"):
        if inc.get(key) is not None:
            lines.append("%s = %s" % (key, toml_value(inc[key])))
    return "\n".join(lines) + "\n"


def data_rows(info):
    counts = info.row_counts if info else {}
    return {k: v for k, v in counts.items() if not k.startswith("_dlt")}


def hand_back(name, binary):
    folder = os.path.join(t.TAKEOVER, name)
    with open(os.path.join(folder, "scenario.json"), encoding="utf-8") as f:
        scenario = json.load(f)
    scenario["name"] = name
    with open(os.path.join(folder, "expected.duckdb.json"), encoding="utf-8") as f:
        expected = json.load(f)
    run1, run2 = scenario["runs"]
    problems = []
    with tempfile.TemporaryDirectory(prefix="dltfx_handback_") as tmp, t.dlt_settings(scenario):
        db_path = os.path.join(tmp, "db.duckdb")

        def pipeline(pipelines_dir):
            return dlt.pipeline(pipeline_name=scenario["pipeline"], pipelines_dir=pipelines_dir,
                                destination=dlt.destinations.duckdb(db_path),
                                dataset_name=scenario["dataset"])

        own_dir = os.path.join(tmp, "pipelines")
        pipeline(own_dir).run(t.make_run(scenario, run1, folder))
        if scenario.get("legacy_hashes"):
            t.rewrite_legacy_hashes(pipeline(own_dir), db_path, scenario["dataset"], scenario)

        # highwater loads the second run, with no working directory of its own
        for fn in run2["files"]:
            with open(os.path.join(folder, fn), "rb") as src, open(os.path.join(tmp, fn), "wb") as dst:
                dst.write(src.read())
        with open(os.path.join(tmp, "pipeline.toml"), "w", encoding="utf-8") as f:
            f.write(pipeline_file(scenario, run2, db_path))
        out = subprocess.run([binary, "run", "pipeline.toml", "--json", "--progress", "none"],
                             cwd=tmp, capture_output=True, text=True)
        if out.returncode != 0:
            return ["highwater failed: " + out.stderr.strip()[-500:]]

        # dlt takes the dataset back: restored from the destination, and synced into its own dir
        for label, pipelines_dir in (("restored", os.path.join(tmp, "fresh")), ("synced", own_dir)):
            p = pipeline(pipelines_dir)
            p.run(t.make_run(scenario, run2, folder))
            loaded = data_rows(p.last_trace.last_normalize_info)
            if loaded:
                problems.append("%s: dlt loaded %s again" % (label, loaded))
        tables = g.dump_dataset(db_path, scenario["dataset"])["tables"]
        if canonical(tables) != canonical(expected["tables"]):
            problems.append("tables differ from dlt's own two-run result")

        # and carries on: one new item past the last value loads once
        last = json.loads(open(os.path.join(folder, run2["files"][0])).readlines()[-1])
        cursor = run2["incremental"]["cursor_path"].split(".")[-1]
        item = dict(last)
        if run2.get("primary_key"):
            for key in run2["primary_key"]:
                item[key] = item[key] + 1000 if isinstance(item[key], int) else "new-" + str(item[key])
        if "$" not in run2["incremental"]["cursor_path"] and not scenario.get("typed_cursor"):
            newer = later(item[cursor], run2["incremental"].get("last_value_func") == "min")
            item[cursor] = newer
            new_file = os.path.join(tmp, "new.jsonl")
            with open(new_file, "w", encoding="utf-8") as f:
                f.write(json.dumps(item) + "\n")
            new_run = dict(run2, files=[new_file])
            p = pipeline(own_dir)
            p.run(t.make_run(scenario, new_run, folder))
            loaded = data_rows(p.last_trace.last_normalize_info)
            root = min(loaded, key=len) if loaded else None  # nested tables' names extend it
            if root is None or loaded[root] != 1:
                problems.append("a new item: dlt loaded %s" % loaded)
    return problems


def later(value, descending):
    """A cursor value past `value` in the incremental's direction."""
    if isinstance(value, (int, float)):
        return value - 100 if descending else value + 100
    return value.replace("20", "19", 1) if descending else value.replace("202", "209", 1)


def canonical(tables):
    """Tables with `_dlt_*` ids and load ids left out: rows as sorted JSON texts."""
    out = {}
    for name, table in tables.items():
        rows = sorted(json.dumps({k: v for k, v in row.items() if not k.startswith("_dlt")},
                                 sort_keys=True) for row in table["rows"])
        out[name] = ([c["name"] for c in table["columns"]], rows)
    return out


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(argv[1])
    names = argv[2:] or sorted(d for d in os.listdir(t.TAKEOVER)
                               if os.path.isfile(os.path.join(t.TAKEOVER, d, "scenario.json")))
    failed = False
    for name in names:
        problems = hand_back(name, binary)
        print("%-16s %s" % (name, "ok" if not problems else "; ".join(problems)))
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
