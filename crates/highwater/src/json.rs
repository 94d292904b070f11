//! Reading JSON text nested as deep as [`MAX_DEPTH`] levels, without risking the stack.
//!
//! serde_json stops at 128 levels of arrays and objects, which real exports pass (dlt 1.31.0
//! loads items up to 253 levels deep: its extract cannot write deeper ones). Text within that
//! limit parses as before, on the fast path; deeper text is measured first by a scan that uses no
//! recursion, refused beyond [`MAX_DEPTH`] with an error saying how deep it is, and otherwise
//! parsed without serde_json's limit. Parsing, and everything done afterwards with a parsed item
//! (flattening, serializing, dropping), recurses once per level: the stages that handle items run
//! inside [`with_deep_stack`], which guarantees room for [`MAX_DEPTH`] levels on any thread.

use serde::de::{Deserialize, Error as _};

/// The deepest nesting of arrays and objects highwater reads; deeper text is an error naming
/// its depth (and, from the callers, its file and line).
pub const MAX_DEPTH: usize = 10_000;

/// Stack one level of nesting may take in the deepest-recursing work on an item (parsing it,
/// serializing it as a JSON column, dropping it), with room to spare; checked by the tests,
/// which handle [`MAX_DEPTH`] levels in exactly this much stack.
pub(crate) const STACK_PER_LEVEL: usize = 1024;

/// Stack a stage keeps for the items it handles: [`MAX_DEPTH`] levels and the stage itself.
const DEEP_STACK: usize = MAX_DEPTH * STACK_PER_LEVEL + (1 << 20);

/// Runs `f` with at least [`MAX_DEPTH`] levels' worth of stack: on the current stack when it has
/// that much left (the main thread usually has), else on a new one allocated for the call.
pub fn with_deep_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(DEEP_STACK, DEEP_STACK + (1 << 20), f)
}

/// Parses one JSON document (surrounding blanks allowed) as `T`.
pub fn from_slice<'a, T: Deserialize<'a>>(json: &'a [u8]) -> serde_json::Result<T> {
    match parse(json, true) {
        Err(e) if is_too_deep(&e) => {
            check_depth(json)?;
            with_deep_stack(|| parse(json, false))
        }
        other => other,
    }
}

/// The first JSON value of `json` (blanks before it skipped) and the bytes it took; `None` when
/// the text holds only blanks.
pub fn next_value<'a, T: Deserialize<'a>>(
    json: &'a [u8],
) -> Option<(serde_json::Result<T>, usize)> {
    match stream(json, true) {
        Some((Err(e), _)) if is_too_deep(&e) => match check_depth(json) {
            Err(e) => Some((Err(e), 0)),
            Ok(()) => with_deep_stack(|| stream(json, false)),
        },
        other => other,
    }
}

/// One document, with serde_json's recursion limit or without it. Valid UTF-8 goes through the
/// `str` parser, which checks each string no more: one check for the whole text is cheaper.
fn parse<'a, T: Deserialize<'a>>(json: &'a [u8], limited: bool) -> serde_json::Result<T> {
    fn run<'a, R: serde_json::de::Read<'a>, T: Deserialize<'a>>(
        mut de: serde_json::Deserializer<R>,
        limited: bool,
    ) -> serde_json::Result<T> {
        if !limited {
            de.disable_recursion_limit();
        }
        let value = T::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
    match std::str::from_utf8(json) {
        Ok(text) => run(serde_json::Deserializer::from_str(text), limited),
        // Invalid text goes through the byte parser, which reports where it is.
        Err(_) => run(serde_json::Deserializer::from_slice(json), limited),
    }
}

fn stream<'a, T: Deserialize<'a>>(
    json: &'a [u8],
    limited: bool,
) -> Option<(serde_json::Result<T>, usize)> {
    let mut de = serde_json::Deserializer::from_slice(json);
    if !limited {
        de.disable_recursion_limit();
    }
    let mut values = de.into_iter::<T>();
    let value = values.next()?;
    Some((value, values.byte_offset()))
}

/// Whether serde_json stopped at its recursion limit.
fn is_too_deep(e: &serde_json::Error) -> bool {
    e.is_syntax() && e.to_string().starts_with("recursion limit exceeded")
}

/// An error when `json` nests deeper than [`MAX_DEPTH`].
fn check_depth(json: &[u8]) -> serde_json::Result<()> {
    let depth = nesting_depth(json);
    if depth > MAX_DEPTH {
        return Err(serde_json::Error::custom(format!(
            "arrays and objects nested {depth} levels deep, more than the {MAX_DEPTH} levels highwater reads"
        )));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects in `json`, from a scan that skips strings (the
/// text need not be valid: the parser reports what is wrong with it).
pub(crate) fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut bytes = json.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                while let Some(&c) = bytes.next() {
                    match c {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn nested(open: &str, close: &str, levels: usize) -> String {
        format!("{}1{}", open.repeat(levels), close.repeat(levels))
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(nesting_depth(br#"["\"[[", "\\", [2]]"#), 2);
    }

    #[test]
    fn text_past_serde_jsons_limit_parses_up_to_the_maximum() {
        for levels in [127, 129, 1000, MAX_DEPTH] {
            let text = nested(r#"{"a":"#, "}", levels);
            let value: Value = from_slice(text.as_bytes()).unwrap();
            let mut node = &value;
            for _ in 0..levels {
                node = &node["a"];
            }
            assert_eq!(node, &Value::from(1), "{levels} levels");
            with_deep_stack(|| drop(value));
        }
    }

    #[test]
    fn text_deeper_than_the_maximum_is_an_error_saying_how_deep() {
        let text = nested("[", "]", MAX_DEPTH + 1);
        let err = from_slice::<Value>(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("nested {} levels deep", MAX_DEPTH + 1)),
            "{err}"
        );
        let (value, _) = next_value::<Value>(text.as_bytes()).unwrap();
        assert!(value.is_err());
    }

    #[test]
    fn next_value_reads_one_value_of_a_stream_at_any_depth() {
        let deep = nested("[", "]", 500);
        let text = format!(" {deep} , 2");
        let (value, used) = next_value::<Value>(text.as_bytes()).unwrap();
        assert!(value.unwrap().is_array());
        assert_eq!(&text[used..], " , 2");
        assert!(next_value::<Value>(b"  ").is_none());
    }

    #[test]
    fn malformed_deep_text_is_still_a_syntax_error() {
        let text = format!("{}x", "[".repeat(300));
        let err = from_slice::<Value>(text.as_bytes()).unwrap_err();
        assert!(err.is_syntax(), "{err}");
    }
}
