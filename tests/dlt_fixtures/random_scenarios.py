#!/usr/bin/env python3
"""Write random scenarios (same format as scenarios/<name>/) for differential checks against dlt.

Each seed gives one scenario: one resource `things` over 1-3 runs of small JSONL files whose
items mix every JSON type, nested objects, lists of scalars, of objects and of lists, keys that
need renaming (CamelCase, dashes, spaces, dots, non-ASCII, leading digits, longer than the
identifier limit, keys that collide after renaming), strings that look like dates or numbers,
with a random write disposition, merge strategy, max_table_nesting, root_key, table names taken
from the item (`{kind}`), compound primary keys, and (mostly) an incremental on `ts` with random
options. Ids are unique within a run (dlt's dedup of repeated
keys in one load keeps an arbitrary row).

Seeds from 1000 on also draw, from a second generator (so lower seeds keep their scenarios):
`lag` and `row_order` (files sorted by the cursor), a `merge_key`, a `hard_delete` column, and
a `dedup_sort` column with keys repeated within a run, and type hints on `id` and `ts`.

Left out on purpose, because highwater differs from dlt there by design or dlt fails:
`end_value` (a stateless backfill writes no state row here, SPEC.md), integers beyond 64 bits
(dlt's load fails), -0.0 (dlt's insert_values SQL turns it into 0.0) and blank keys holding
lists (dlt files their rows under the parent table).

usage: python3 tests/dlt_fixtures/random_scenarios.py OUT_DIR FIRST_SEED END_SEED
then:  <venv>/bin/python tests/dlt_fixtures/generate.py $(ls -d OUT_DIR/random_*)
The golden test `random_scenarios_match_dlt` runs every folder under tests/dlt_fixtures/random.
"""
import json
import os
import random
import sys

KEYS = ["name", "Value", "createdAt", "user-name", "a b", "x", "items", "tags", "meta", "nested",
        "Ünïcode", "1st", "count", "price", "flag", "when", "day", "payload", "children",
        "userName", "user_name", "a_b", "_x", "x.y", "CamelCaseKey",
        "a_key_long_enough_to_pass_the_identifier_limit_of_the_naming_convention_" * 2]


def scalar(r):
    k = r.randrange(10)
    if k == 0:
        return None
    if k == 1:
        return r.choice([True, False])
    if k == 2:
        return r.randrange(-1000, 1000)
    if k == 3:
        return round(r.uniform(-100, 100), 3)
    if k == 4:
        return r.choice(["a", "", "hello world", "ünï", "2024-01-0%dT10:00:00Z" % r.randrange(1, 9)])
    if k == 5:
        return "2024-0%d-1%d" % (r.randrange(1, 9), r.randrange(0, 9))
    if k == 6:
        return "2024-01-01T0%d:00:00+02:00" % r.randrange(0, 9)
    if k == 7:
        return r.randrange(10**12, 10**15)
    if k == 8:
        return r.choice([str(r.randrange(100)), 1.0, 2**40 + 5, 0.5, {}, "  spaced  "])
    return r.choice(["x", "y", "zz"])


def value(r, depth):
    k = r.randrange(10)
    if depth < 3 and k < 2:
        return obj(r, depth + 1)
    if depth < 3 and k < 4:
        n = r.randrange(0, 4)
        kind = r.randrange(3)
        if kind == 0:
            return [scalar(r) for _ in range(n)]
        if kind == 1:
            return [obj(r, depth + 1) for _ in range(n)]
        return [[scalar(r) for _ in range(r.randrange(0, 3))] for _ in range(n)]
    return scalar(r)


def obj(r, depth):
    return {k: value(r, depth) for k in r.sample(KEYS, r.randrange(0, 5))}


def item(r, i, cursor_may_be_missing, kinds):
    d = obj(r, 0)
    d["id"] = i
    if kinds:
        d["kind"] = kinds[i % len(kinds)]
    if not (cursor_may_be_missing and r.random() < 0.2):
        # three ids share each day, so runs meet at boundaries
        d["ts"] = "2024-01-%02dT00:00:00Z" % (1 + (i // 3) % 28)
    return d


def incremental_spec(r):
    spec = {"cursor_path": "ts"}
    if r.random() < 0.3:
        spec["initial_value"] = "2024-01-02T00:00:00Z"
    if r.random() < 0.2:
        spec["last_value_func"] = "min"
    if r.random() < 0.2:
        spec["primary_key"] = []
    if r.random() < 0.2:
        spec["range_start"] = "open"
    if r.random() < 0.2:
        spec["range_end"] = "closed"
    missing = r.choice([None, None, "include", "exclude"])
    if missing:
        spec["on_cursor_value_missing"] = missing
    return spec


def extras(seed, disposition, incremental):
    """The extended options of seeds from 1000 on (see the module doc)."""
    if seed < 1000:
        return {}
    r = random.Random(seed * 7919 + 1)
    x = {}
    if incremental and r.random() < 0.4:
        incremental["lag"] = r.choice([3600, 86400, 2 * 86400])
    if incremental and r.random() < 0.4:
        incremental["row_order"] = r.choice(["asc", "desc"])
    if disposition == "merge":
        if r.random() < 0.3:
            x["merge_key"] = ["bucket"]
        if r.random() < 0.3:
            x["hard_delete"] = True
        if r.random() < 0.3:
            x["dedup_sort"] = r.choice(["asc", "desc"])
    if r.random() < 0.3:
        x["type_hints"] = True
    return x


def scenario(seed, out):
    r = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    disposition = r.choice(["append", "merge", "merge", "replace"])
    root_key = r.random() < 0.2
    strategy = r.choice([None, None, "upsert", "insert-only"]) if disposition == "merge" else None
    incremental = incremental_spec(r) if r.random() < 0.8 else None
    missing = bool(incremental and incremental.get("on_cursor_value_missing"))
    dynamic = r.random() < 0.4
    kinds = ["Push Event", "issueComment", "pull-request"] if dynamic or r.random() < 0.3 else None
    compound = kinds is not None and r.random() < 0.5
    x = extras(seed, disposition, incremental)
    columns = {}
    if x.get("hard_delete"):
        columns["deleted"] = {"hard_delete": True}
    if x.get("dedup_sort"):
        columns["seq"] = {"dedup_sort": x["dedup_sort"]}
    if x.get("type_hints"):
        columns["id"] = {"data_type": "bigint"}
        columns["ts"] = {"data_type": "timestamp"}
    seq = 0
    runs = []
    for n in range(r.randrange(1, 4)):
        if disposition == "merge":
            ids = [r.randrange(1, 15) for _ in range(r.randrange(1, 8))]
        else:
            ids = list(range(n * 10, n * 10 + r.randrange(1, 8)))
        if not x.get("dedup_sort"):
            # without a dedup_sort, dlt keeps an arbitrary one of a key's rows in one load
            ids = sorted(set(ids)) if incremental else list(dict.fromkeys(ids))
        items = [item(r, i, missing, kinds) for i in ids]
        for d in items:
            seq += 1
            if x:
                d["bucket"] = d["id"] % 3
                d["seq"] = seq
            if x.get("hard_delete"):
                d["deleted"] = seq % 4 == 0
        order = (incremental or {}).get("row_order")
        if order:
            items.sort(key=lambda d: d.get("ts") or "", reverse=order == "desc")
        name = "run%d.jsonl" % (n + 1)
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for d in items:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        runs.append({
            "resource": "things", "files": [name], "write_disposition": disposition,
            "primary_key": (["id", "kind"] if compound else ["id"]) if disposition == "merge" else [],
            "merge_key": x.get("merge_key", []),
            "merge_strategy": strategy, "table_name": "{kind}" if dynamic else None,
            "max_table_nesting": r.choice([None, None, None, 1, 2]),
            "root_key": root_key, "columns": columns, "incremental": incremental,
        })
    with open(os.path.join(out, "scenario.json"), "w", encoding="utf-8") as f:
        json.dump({"pipeline": "p_random_%d" % seed, "dataset": "data", "runs": runs}, f, indent=1)
        f.write("\n")


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, first, end = argv[1], int(argv[2]), int(argv[3])
    for seed in range(first, end):
        scenario(seed, os.path.join(out, "random_%04d" % seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
