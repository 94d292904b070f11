//! Cursor paths: a field name, a dotted path, or a JSONPath of names and indexes (`$.a[0].b`, `$`).

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A parsed cursor path that picks one value out of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorPath {
    text: String,
    steps: Vec<Step>,
}

impl CursorPath {
    /// The path of nested object keys, `["links", "next"]` for `links.next`; no keys is `$`.
    pub fn from_keys<S: AsRef<str>>(keys: &[S]) -> Self {
        let names: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        CursorPath {
            text: if names.is_empty() {
                "$".into()
            } else {
                names.join(".")
            },
            steps: names.iter().map(|k| Step::Key(k.to_string())).collect(),
        }
    }

    /// Parses `updated_at`, `item.ts`, `$.a[0].b`, `$['a b'].c` or `$` (the whole item).
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::Config(format!(
                "cursor_path {text:?} is not a valid JSONPath: {why}"
            ))
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut steps = Vec::new();
        let chars: Vec<char> = trimmed.chars().collect();
        let mut i = 0;
        if chars[0] == '$' {
            i = 1;
        } else {
            // A bare name starts the path.
            let start = i;
            while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                i += 1;
            }
            steps.push(Step::Key(chars[start..i].iter().collect()));
        }
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    if name.is_empty() || name == "*" {
                        return Err(invalid("expected a field name after '.'"));
                    }
                    steps.push(Step::Key(name));
                }
                '[' => {
                    let close = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .map(|p| p + i)
                        .ok_or_else(|| invalid("unclosed '['"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    if let Some(quoted) = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                    {
                        steps.push(Step::Key(quoted.to_string()));
                    } else if let Ok(index) = inner.parse::<usize>() {
                        steps.push(Step::Index(index));
                    } else {
                        return Err(invalid(
                            "only names and non-negative indexes are supported in brackets",
                        ));
                    }
                    i = close + 1;
                }
                other => return Err(invalid(&format!("unexpected character {other:?}"))),
            }
        }
        Ok(CursorPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The top-level field when the path is a single name (for column hints and SQL pushdown).
    pub fn single_field(&self) -> Option<&str> {
        match self.steps.as_slice() {
            [Step::Key(name)] => Some(name),
            _ => None,
        }
    }

    /// The value the path points at, if there is one.
    pub fn find<'a>(&self, item: &'a Value) -> Option<&'a Value> {
        let mut current = item;
        for step in &self.steps {
            current = match step {
                Step::Key(key) => current.get(key.as_str())?,
                Step::Index(index) => current.get(*index)?,
            };
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_values() {
        let item = json!({"a": [{"b": 5}], "item": {"ts": 3}, "x y": 1, "updated_at": 9});
        let find = |p: &str| CursorPath::parse(p).unwrap().find(&item).cloned();
        assert_eq!(find("updated_at"), Some(json!(9)));
        assert_eq!(find("item.ts"), Some(json!(3)));
        assert_eq!(find("$.a[0].b"), Some(json!(5)));
        assert_eq!(find("$['x y']"), Some(json!(1)));
        assert_eq!(find("$"), Some(item.clone()));
        assert_eq!(find("missing"), None);
    }

    #[test]
    fn rejects_invalid_paths() {
        for bad in ["", "$.", "$[", "$.a[*]", "$..a", "$x"] {
            assert!(CursorPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
