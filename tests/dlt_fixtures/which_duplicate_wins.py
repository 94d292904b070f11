"""Which row of a repeated primary key dlt 1.31.0 keeps within one merge load, on the bundled
example (examples/github_events): prints, per destination, how many repeated ids kept their
first, second, ... occurrence in load order. highwater keeps the last (README, "Within one load").

    ~/.cache/dlt-venv/bin/python tests/dlt_fixtures/which_duplicate_wins.py
    PGURL=postgresql://USER:PASSWORD@127.0.0.1:5432/DB ~/.cache/dlt-venv/bin/python tests/dlt_fixtures/which_duplicate_wins.py

(PostgreSQL needs `dlt[postgres]==1.31.0` in the venv.) On 2026-12-07: DuckDB kept the first
occurrence of all 151 repeated ids; PostgreSQL the first for 74 and a later one for 77.
"""

import collections
import glob
import json
import os
import sys
import tempfile

import dlt

DATA = os.path.join(os.path.dirname(__file__), "../../examples/github_events/data/events-*.jsonl")


def rows():
    for path in sorted(glob.glob(DATA)):
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


@dlt.resource(name="events", write_disposition="merge", primary_key="id",
              columns={"created_at": {"data_type": "timestamp"}})
def events(created_at=dlt.sources.incremental("created_at", initial_value="2024-01-01T00:00:00Z")):
    yield from rows()


def kept_occurrences(kept):
    """Counter of (occurrences, index kept) over the repeated ids; kept: id -> (type, created_at)."""
    by_id = collections.defaultdict(list)
    for row in rows():
        by_id[row["id"]].append(row)
    out = collections.Counter()
    for key, versions in by_id.items():
        if len(versions) < 2:
            continue
        kind, at = kept[key]
        index = [i for i, r in enumerate(versions)
                 if r["type"] == kind and r["created_at"][:19].replace("T", " ") == at[:19]]
        out[(len(versions), tuple(index))] += 1
    return out


def main():
    work = tempfile.mkdtemp()
    duck = os.path.join(work, "dlt.duckdb")
    p = dlt.pipeline("dup_duckdb", destination=dlt.destinations.duckdb(duck),
                     dataset_name="github_data", pipelines_dir=work)
    p.run(events())
    import duckdb
    con = duckdb.connect(duck, read_only=True)
    kept = {r[0]: (r[1], str(r[2])) for r in con.execute(
        "SELECT id, type, strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') FROM github_data.events").fetchall()}
    print("duckdb (occurrences, index kept): count", dict(kept_occurrences(kept)))
    url = os.environ.get("PGURL")
    if url:
        p = dlt.pipeline("dup_postgres", destination=dlt.destinations.postgres(url),
                         dataset_name="github_data_dup", pipelines_dir=work)
        p.run(events())
        import psycopg2
        cur = psycopg2.connect(url).cursor()
        cur.execute("SELECT id, type, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                    "FROM github_data_dup.events")
        kept = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        print("postgres (occurrences, index kept): count", dict(kept_occurrences(kept)))


if __name__ == "__main__":
    sys.exit(main())
