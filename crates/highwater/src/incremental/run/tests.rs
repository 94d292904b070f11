use super::*;
use serde_json::json;
use std::sync::Arc;

fn run_over(
    inc: Incremental,
    key: Option<&[String]>,
    stored: Option<&Value>,
    items: &[Value],
) -> (Vec<Value>, Value) {
    let mut run = IncrementalRun::bind(inc, "r", key, None, stored).unwrap();
    let kept = items
        .iter()
        .filter(|item| run.filter(item, &"").unwrap() == Verdict::Keep)
        .cloned()
        .collect();
    (kept, run.to_state(stored))
}

#[test]
fn keeps_range_and_dedups_boundary_by_key() {
    let key = vec!["id".to_string()];
    let inc = Incremental::new("ts").unwrap().initial_value(10);
    let items: Vec<Value> = vec![
        json!({"id": 1, "ts": 9}),
        json!({"id": 2, "ts": 10}),
        json!({"id": 3, "ts": 12}),
        json!({"id": 4, "ts": 12}),
    ];
    let (kept, state) = run_over(inc.clone(), Some(&key), None, &items);
    assert_eq!(kept.len(), 3);
    assert_eq!(state["last_value"], json!(12));
    // Two rows at the boundary, each hashed as dlt hashes `primary_key="id"` and `["id"]`.
    assert_eq!(state["unique_hashes"].as_array().unwrap().len(), 4);
    // Next run: ids 3 and 4 at the boundary are skipped, id 5 at the boundary is new.
    let items2 = vec![
        json!({"id": 3, "ts": 12}),
        json!({"id": 4, "ts": 12}),
        json!({"id": 5, "ts": 12}),
        json!({"id": 6, "ts": 13}),
    ];
    let (kept2, state2) = run_over(inc, Some(&key), Some(&state), &items2);
    let ids: Vec<_> = kept2.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(ids, vec![json!(5), json!(6)]);
    assert_eq!(state2["last_value"], json!(13));
}

#[test]
fn rows_judged_from_their_text_fare_as_parsed_rows() {
    // Two runs over the same rows, one reading the text, one the parsed values: the same
    // rows kept, the same state and the same errors, for one key, two keys and no dedup.
    let rows = [
        r#"{"id":1,"k":"a","ts":"2024-01-04T11:20:02Z"}"#,
        r#"{"id":2,"k":"a","ts":"2024-01-04T11:20:03.5Z"}"#,
        r#"{"id":3,"k":"b","ts":"2024-01-04T11:20:03.5Z"}"#,
        r#"{"id":4,"k":"a","ts":"2024-01-04T11:20:03.4Z"}"#,
        r#"{"id":5,"k":"a","ts":"2024-01-04T12:20:03.5+01:00"}"#,
        r#"{"id":6,"k":"a","ts":"2024-01-04T11:20:04Z"}"#,
        r#"{"id":7,"k":"a","ts":"2024-01-04T11:20:04Z"}"#,
        r#"{"id":8,"k":"a","ts":"2024-01-04T11:20:04.000001Z"}"#,
    ];
    let stored = json!({
        "initial_value": "2024-01-01T00:00:00Z",
        "last_value": "2024-01-04T11:20:03.5Z",
        "unique_hashes": [stored::key_hash("2", false)],
    });
    let keys: [Option<Vec<String>>; 3] = [
        Some(vec!["id".into()]),
        Some(vec!["id".into(), "k".into()]),
        Some(vec![]),
    ];
    for key in keys {
        let inc = Incremental::new("ts").unwrap();
        let bind = || {
            let kind = Some(CursorKind::Timestamp);
            IncrementalRun::bind(inc.clone(), "r", key.as_deref(), kind, Some(&stored)).unwrap()
        };
        let (mut from_text, mut parsed) = (bind(), bind());
        let mut kept = Vec::new();
        for row in rows {
            let by_text = from_text.filter_text(row.as_bytes(), &"").unwrap().unwrap();
            let value: Value = serde_json::from_str(row).unwrap();
            assert_eq!(
                by_text,
                parsed.filter(&value, &"").unwrap(),
                "{key:?} {row}"
            );
            if by_text == Verdict::Keep {
                kept.push(value["id"].as_i64().unwrap());
            }
        }
        if key == Some(vec!["id".to_string()]) {
            // Id 2 was loaded at the start value; ids 3 and 5 share it but are new.
            assert_eq!(kept, [3, 5, 6, 7, 8]);
        }
        assert_eq!(
            from_text.to_state(Some(&stored)),
            parsed.to_state(Some(&stored)),
            "{key:?}"
        );
    }
    // A row without its key field is refused either way, with its place.
    let key = vec!["id".to_string()];
    let inc = Incremental::new("ts").unwrap();
    let mut run = IncrementalRun::bind(inc, "r", Some(&key), None, Some(&stored)).unwrap();
    let row = r#"{"ts":"2024-01-04T11:20:03.5Z"}"#;
    let err = run.filter_text(row.as_bytes(), &"f.jsonl:3: ");
    let err = err.unwrap().unwrap_err().to_string();
    assert!(err.contains("f.jsonl:3") && err.contains("\"id\""), "{err}");
}

#[test]
fn prefilter_decides_by_the_second_as_parsing_does() {
    let start = "2024-01-04T11:20:03.5Z";
    let bind = |inc: Incremental| {
        IncrementalRun::bind(inc, "r", None, Some(CursorKind::Timestamp), None).unwrap()
    };
    let inc = Incremental::new("ts").unwrap().initial_value(start);
    let mut by_second = bind(inc.clone());
    // An end value turns the shortcut off, and lies after every cursor below.
    let mut parsed = bind(inc.end_value("9999-12-31T23:59:59Z"));
    assert!(by_second.start_second.is_some() && parsed.start_second.is_none());
    let texts: Vec<&[u8]> = vec![
        b"2024-01-04T11:20:02Z",
        b"2024-01-04T11:20:02.999999Z",
        b"2024-01-04T11:20:03Z",
        b"2024-01-04T11:20:03.4Z",
        b"2024-01-04T11:20:03.5Z",
        b"2024-01-04T11:20:03.6+00:00",
        b"2024-01-04T11:20:04Z",
        b"2023-12-31 23:59:59",
        b"2024-01-04T12:20:02+01:00",
        b"2024-01-04T10:20:04-01:00",
        b"2024-01-04T11:20:60Z",
        b"2024-01-04",
        b"2023-02-29T00:00:00Z",
        b"2024-01-0\xff",
        b"later",
    ];
    for text in texts {
        let mut line = br#"{"id":1,"ts":""#.to_vec();
        line.extend_from_slice(text);
        line.extend_from_slice(br#""}"#);
        let shown = String::from_utf8_lossy(text);
        assert_eq!(
            by_second.prefilter(&line),
            parsed.prefilter(&line),
            "{shown}"
        );
        assert_eq!(
            (by_second.start_out_of_range, by_second.end_out_of_range),
            (parsed.start_out_of_range, parsed.end_out_of_range),
            "{shown}"
        );
    }
}

#[test]
fn end_value_is_open_and_missing_cursor_raises() {
    let inc = Incremental::new("ts")
        .unwrap()
        .initial_value(1)
        .end_value(3);
    let (kept, _) = run_over(
        inc.clone(),
        None,
        None,
        &[json!({"ts": 1}), json!({"ts": 2}), json!({"ts": 3})],
    );
    assert_eq!(kept.len(), 2);
    let mut run = IncrementalRun::bind(inc, "r", None, None, None).unwrap();
    let err = run
        .filter(&json!({"other": 1}), &"f.jsonl:7: ")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.jsonl:7") && err.contains("cursor ts"),
        "{err}"
    );
}

#[test]
fn min_keeps_older_values() {
    let inc = Incremental::new("ts")
        .unwrap()
        .initial_value(10)
        .last_value_func(LastValueFunc::Min);
    let (kept, state) = run_over(
        inc,
        None,
        None,
        &[json!({"ts": 11}), json!({"ts": 9}), json!({"ts": 10})],
    );
    assert_eq!(kept, vec![json!({"ts": 9}), json!({"ts": 10})]);
    assert_eq!(state["last_value"], json!(9));
}

/// dlt's documentation example: one last value per event type, in a map.
#[test]
fn custom_last_value_func_keeps_a_map_per_event_type() {
    let by_type: CustomLastValue = Arc::new(|values: &[&Value]| {
        let item = values[0];
        let mut last = values
            .get(1)
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        let t = item["type"].as_str().unwrap_or("").to_string();
        let ts = item["ts"].as_i64().unwrap_or(0);
        let best = last
            .get(&t)
            .and_then(Value::as_i64)
            .map_or(ts, |old| old.max(ts));
        last.insert(t, json!(best));
        Value::Object(last)
    });
    let inc = Incremental::new("$")
        .unwrap()
        .last_value_func(LastValueFunc::Custom(by_type))
        .primary_key(Vec::<String>::new());
    let run1 = [
        json!({"type": "A", "ts": 1}),
        json!({"type": "B", "ts": 5}),
        json!({"type": "A", "ts": 3}),
    ];
    let (kept, state) = run_over(inc.clone(), None, None, &run1);
    assert_eq!(kept.len(), 3);
    assert_eq!(state["last_value"], json!({"A": 3, "B": 5}));
    let run2 = [
        json!({"type": "A", "ts": 2}),
        json!({"type": "A", "ts": 4}),
        json!({"type": "B", "ts": 5}),
        json!({"type": "C", "ts": 1}),
    ];
    let (kept, state) = run_over(inc, None, Some(&state), &run2);
    assert_eq!(
        kept,
        vec![json!({"type": "A", "ts": 4}), json!({"type": "C", "ts": 1})]
    );
    assert_eq!(state["last_value"], json!({"A": 4, "B": 5, "C": 1}));
}
