#!/usr/bin/env python3
"""Writes the hostile-input cases of tests/hostile/cases/: one JSON Lines file per case (bytes
exactly as a real export might have them) and cases.json with each case's pipeline hints.

usage: python3 tests/hostile/make_cases.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")

MB = 1 << 20
cases = {
    # name: (lines as bytes, hints)
    "nul_escaped": ([b'{"id": 1, "s": "a\\u0000b"}', b'{"id": 2, "s": "ok"}'], {}),
    "nul_raw": ([b'{"id": 1, "s": "ok"}', b'{"id": 2, "s": "a\x00b"}'], {}),
    "invalid_utf8": ([b'{"id": 1, "s": "ok"}', b'{"id": 2, "s": "caf\xe9"}'], {}),
    "lone_surrogate": ([b'{"id": 1, "s": "ok"}', b'{"id": 2, "s": "\\ud800"}'], {}),
    "megabyte_strings": ([b'{"id": 1, "s": "' + b"x" * (5 * MB) + b'"}', b'{"id": 2, "s": "' + b"\xc3\xa9" * MB + b'"}'], {}),
    "int_beyond_64_bits": ([b'{"id": 1, "n": 5}', b'{"id": 2, "n": 18446744073709551616}'], {}),
    "int_beyond_64_bits_first": ([b'{"id": 1, "n": -9223372036854775809}'], {}),
    "float_overflow": ([b'{"id": 1, "x": 1.5}', b'{"id": 2, "x": 1e400}'], {}),
    "nan_literal": ([b'{"id": 1, "x": 1.5}', b'{"id": 2, "x": NaN}'], {}),
    "sql_keys": ([b'{"id": 1, "select": 1, "from": "x", "a\\"; DROP TABLE items; --": 2, "Robert\'); DROP TABLE students;--": "b"}'], {}),
    "wrong_cursor_type": ([b'{"id": 1, "ts": 10}', b'{"id": 2, "ts": "yesterday"}'], {"incremental": {"cursor_path": "ts", "initial_value": 0}}),
    "missing_cursor": ([b'{"id": 1, "ts": 10}', b'{"id": 2}'], {"incremental": {"cursor_path": "ts", "initial_value": 0}}),
    "missing_primary_key": ([b'{"id": 1, "v": "a"}', b'{"v": "b"}'], {"write_disposition": "merge", "primary_key": "id"}),
    "null_primary_key": ([b'{"id": 1, "v": "a"}', b'{"id": null, "v": "b"}'], {"write_disposition": "merge", "primary_key": "id"}),
    "empty_file": ([], {}),
    "blank_lines": ([b"", b"   ", b'{"id": 1}', b"", b'{"id": 2}', b"  "], {}),
    "crlf": ([b'{"id": 1, "s": "a"}\r', b'{"id": 2, "s": "b"}\r'], {}),
    "utf8_bom": ([b'\xef\xbb\xbf{"id": 1}', b'{"id": 2}'], {}),
    "two_values_on_a_line": ([b'{"id": 1}', b'{"id": 2} {"id": 3}'], {}),
    "truncated_last_line": ([b'{"id": 1}', b'{"id": 2, "s": "unfinish'], {}),
    "duplicate_keys": ([b'{"id": 1, "a": 1, "a": 2}'], {}),
    "scalar_line": ([b'{"id": 1}', b'42'], {}),
    "type_changes": ([b'{"id": 1, "v": 1}', b'{"id": 2, "v": "text"}', b'{"id": 3, "v": {"x": 1}}', b'{"id": 4, "v": [1]}', b'{"id": 5, "v": true}'], {}),
}


def main():
    os.makedirs(CASES, exist_ok=True)
    spec = {}
    for name, (lines, hints) in cases.items():
        with open(os.path.join(CASES, name + ".jsonl"), "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))
        spec[name] = hints
    with open(os.path.join(CASES, "cases.json"), "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
