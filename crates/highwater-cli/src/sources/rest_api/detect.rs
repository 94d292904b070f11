//! What dlt's `RESTClient` guesses when a `rest_api` source sets no `data_selector` or no
//! `paginator`, looked at on the first response (dlt's `detector.py`, rule for rule), so the
//! same configuration reads the same pages and records.

use highwater::incremental::CursorPath;
use serde_json::{Map, Value};

use super::Paginator;

/// Keys that name a list of records.
const RECORD_KEYS: [&str; 11] = [
    "data", "items", "results", "entries", "records", "rows", "entities", "payload", "content",
    "objects", "values",
];

/// Where the records are: the first list (depth first, at most three keys deep) under a record
/// key, else the first list, else the whole body (`None`).
pub fn records_path(body: &Value) -> Option<CursorPath> {
    let Value::Object(map) = body else {
        return None;
    };
    let mut lists = Vec::new();
    find_lists(map, &mut Vec::new(), &mut lists);
    let chosen = lists
        .iter()
        .find(|path| {
            path.last()
                .is_some_and(|k| RECORD_KEYS.contains(&k.as_str()))
        })
        .or_else(|| lists.first())?;
    Some(CursorPath::from_keys(chosen))
}

fn find_lists(map: &Map<String, Value>, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if path.len() > 2 {
        return;
    }
    for (key, value) in map {
        match value {
            Value::Array(_) => {
                let mut found = path.clone();
                found.push(key.clone());
                out.push(found);
            }
            Value::Object(inner) => {
                path.push(key.clone());
                find_lists(inner, path, out);
                path.pop();
            }
            _ => {}
        }
    }
}

/// The paginator for an API whose first response is `body` with the `Link` header `link`, and
/// whether the guess is certain (dlt warns when it is not).
pub fn paginator(body: &Value, has_next_link: bool) -> (Paginator, bool) {
    if has_next_link {
        return (Paginator::HeaderLink, true);
    }
    if let Some((path, value)) = next_page_path(body, &mut Vec::new()) {
        let keys = CursorPath::from_keys(&path);
        if value
            .as_str()
            .is_some_and(|s| s.starts_with("http") || s.starts_with('/'))
        {
            return (
                Paginator::JsonLink {
                    next_url_path: keys,
                },
                true,
            );
        }
        if let Some(total_path) = total_pages_path(body, &mut Vec::new()) {
            return (page_number(total_path), false);
        }
        return (
            Paginator::Cursor {
                cursor_path: keys,
                cursor_param: "cursor".into(),
            },
            false,
        );
    }
    if let Some(total_path) = total_pages_path(body, &mut Vec::new()) {
        return (page_number(total_path), false);
    }
    (Paginator::SinglePage, true)
}

/// dlt's detected `PageNumberPaginator`: page 0 first (the first request had no page), then 1, …
fn page_number(total_path: Vec<String>) -> Paginator {
    Paginator::PageNumber {
        base_page: 0,
        page_param: "page".into(),
        total_path: Some(CursorPath::from_keys(&total_path)),
    }
}

/// The first key starting with `next` (depth first) holding a scalar, or an object whose key
/// starting with `href`/`url` holds one.
fn next_page_path(body: &Value, path: &mut Vec<String>) -> Option<(Vec<String>, Value)> {
    let Value::Object(map) = body else {
        return None;
    };
    for (key, value) in map {
        if key.to_lowercase().starts_with("next") {
            match value {
                Value::Object(inner) => {
                    let found = inner.iter().find(|(k, v)| {
                        let k = k.to_lowercase();
                        (k.starts_with("href") || k.starts_with("url")) && is_scalar(v)
                    });
                    if let Some((inner_key, inner_value)) = found {
                        let mut full = path.clone();
                        full.extend([key.clone(), inner_key.clone()]);
                        return Some((full, inner_value.clone()));
                    }
                }
                v if is_scalar(v) => {
                    let mut full = path.clone();
                    full.push(key.clone());
                    return Some((full, v.clone()));
                }
                _ => {}
            }
        }
        if value.is_object() {
            path.push(key.clone());
            let found = next_page_path(value, path);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// The first `total_pages` / `pages` / `totalpages` key (any case, depth first) holding a number
/// or numeric text.
fn total_pages_path(body: &Value, path: &mut Vec<String>) -> Option<Vec<String>> {
    let Value::Object(map) = body else {
        return None;
    };
    for (key, value) in map {
        if matches!(
            key.to_lowercase().as_str(),
            "total_pages" | "pages" | "totalpages"
        ) && is_scalar(value)
        {
            let numeric = match value {
                Value::Number(_) => true,
                Value::String(s) => s.trim().parse::<i64>().is_ok(),
                _ => false,
            };
            if !numeric {
                // dlt stops at the first matching key even when it is not a number.
                return None;
            }
            let mut full = path.clone();
            full.push(key.clone());
            return Some(full);
        }
        if value.is_object() {
            path.push(key.clone());
            let found = total_pages_path(value, path);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// A Python `str`, `int` or `float` (bool counts as int there).
fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_prefer_record_keys_then_the_first_list() {
        let path = |body: Value| records_path(&body).map(|p| p.as_str().to_string());
        assert_eq!(path(json!([1, 2])), None);
        assert_eq!(path(json!({"a": 1})), None);
        assert_eq!(
            path(json!({"meta": {"tags": []}, "results": [1]})),
            Some("results".into())
        );
        assert_eq!(
            path(json!({"meta": {"tags": []}, "other": [1]})),
            Some("meta.tags".into())
        );
        assert_eq!(
            path(json!({"page": {"body": {"items": [1]}}})),
            Some("page.body.items".into())
        );
        // Deeper than three keys is not looked at.
        assert_eq!(path(json!({"a": {"b": {"c": {"items": [1]}}}})), None);
    }

    #[test]
    fn paginators_are_guessed_in_dlts_order() {
        assert_eq!(paginator(&json!([]), true).0, Paginator::HeaderLink);
        let (p, sure) = paginator(
            &json!({"data": [], "links": {"next": {"href": "/p2"}}}),
            false,
        );
        assert_eq!(
            p,
            Paginator::JsonLink {
                next_url_path: CursorPath::from_keys(&["links", "next", "href"])
            }
        );
        assert!(sure);
        let (p, sure) = paginator(&json!({"data": [], "next_cursor": "abc"}), false);
        assert_eq!(
            p,
            Paginator::Cursor {
                cursor_path: CursorPath::from_keys(&["next_cursor"]),
                cursor_param: "cursor".into()
            }
        );
        assert!(!sure);
        let (p, _) = paginator(&json!({"data": [], "meta": {"Total_Pages": "3"}}), false);
        assert_eq!(
            p,
            Paginator::PageNumber {
                base_page: 0,
                page_param: "page".into(),
                total_path: Some(CursorPath::from_keys(&["meta", "Total_Pages"]))
            }
        );
        assert_eq!(
            paginator(&json!({"data": [], "next": null}), false).0,
            Paginator::SinglePage
        );
    }
}
