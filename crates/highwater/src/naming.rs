//! dlt's `snake_case` naming convention, bit for bit.
//!
//! Every table and column name in the destination goes through here, so that a dataset written by
//! highwater has exactly the names dlt gives the same data. Dict keys are normalized as *paths*
//! (`a__b` stays `a__b`), plain identifiers collapse `__` to `_`; both shorten over-long names with
//! the same 6-character shake_128 tag dlt uses.

use crate::hash::shake128_b64;

/// The separator dlt puts between the fragments of a path (`parent__child`).
pub const PATH_SEPARATOR: &str = "__";

/// The naming convention of one destination: `snake_case` with the destination's identifier limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming {
    /// Longest identifier the destination accepts; `None` means unlimited.
    pub max_length: Option<usize>,
    /// Whether dict keys and table names break into paths at `__` (dlt 1.4 and later). A
    /// dataset first written by an older dlt keeps `use_break_path_on_normalize: false` in its
    /// schema: there `a__b` is one identifier, `a_b`.
    pub break_paths: bool,
}

impl Default for Naming {
    /// DuckDB's limit (65536) never shortens in practice; this is what dlt uses for DuckDB.
    fn default() -> Self {
        Naming {
            max_length: Some(65536),
            break_paths: true,
        }
    }
}

impl Naming {
    /// A convention for a destination whose identifiers may be at most `max_length` long.
    pub fn with_max_length(max_length: usize) -> Self {
        Naming {
            max_length: Some(max_length),
            break_paths: true,
        }
    }

    /// The same convention, breaking keys into paths or not (see [`Naming::break_paths`]).
    pub fn with_break_paths(self, break_paths: bool) -> Self {
        Naming {
            break_paths,
            ..self
        }
    }

    /// Normalizes a dict key or a table name as dlt's relational normalizer does: as a path,
    /// or as one identifier where the schema says keys do not break into paths.
    pub fn normalize_key(&self, key: &str) -> String {
        if self.break_paths {
            self.normalize_path(key)
        } else {
            self.normalize_identifier(key)
        }
    }

    /// Normalizes one identifier (`createdAt` → `created_at`, `a__b` → `a_b`).
    pub fn normalize_identifier(&self, ident: &str) -> String {
        let stripped = ident.trim();
        let normalized = snake_case(stripped);
        self.shorten(&normalized, stripped)
    }

    /// Normalizes a dict key or table path: fragments split on `__` are normalized one by one.
    pub fn normalize_path(&self, path: &str) -> String {
        let joined = path
            .split(PATH_SEPARATOR)
            .filter(|f| !f.trim().is_empty())
            .map(|f| snake_case(f.trim()))
            .collect::<Vec<_>>()
            .join(PATH_SEPARATOR);
        self.shorten(&joined, path)
    }

    /// Joins already normalized fragments with `__` and shortens the result.
    pub fn shorten_fragments(&self, fragments: &[&str]) -> String {
        let joined = fragments
            .iter()
            .filter(|f| !f.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(PATH_SEPARATOR);
        self.shorten(&joined, &joined)
    }

    fn shorten(&self, normalized: &str, original: &str) -> String {
        match self.max_length {
            Some(max) if normalized.len() > max => trim_and_tag(normalized, original, max),
            _ => normalized.to_string(),
        }
    }
}

/// Steps 2–7 of dlt's `normalize_identifier`, without shortening.
fn snake_case(ident: &str) -> String {
    // 2. character translation, 3. runs of anything outside [A-Za-z0-9_] become one `_`.
    let mut s = String::with_capacity(ident.len());
    let mut in_run = false;
    for c in ident.chars() {
        let c = match c {
            '+' | '*' => 'x',
            '-' => '_',
            '@' => 'a',
            '|' => 'l',
            other => other,
        };
        if c.is_ascii_alphanumeric() || c == '_' {
            s.push(c);
            in_run = false;
        } else if !in_run {
            s.push('_');
            in_run = true;
        }
    }
    // 4. camelCase split, then lower case.
    let s = split_capitalised_words(&s);
    let s = split_lower_upper(&s).to_ascii_lowercase();
    // 5. leading digit.
    let mut s = if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else {
        s
    };
    // 6. trailing underscores become x's.
    let trailing = s.len() - s.trim_end_matches('_').len();
    if trailing > 0 {
        s.truncate(s.len() - trailing);
        s.push_str(&"x".repeat(trailing));
    }
    // 7. collapse runs of underscores.
    collapse_underscores(&s)
}

/// Regex `([^_])([A-Z][a-z]+)` → `\1_\2`, applied left to right without overlapping matches.
fn split_capitalised_words(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if i + 2 < b.len()
            && b[i] != b'_'
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_lowercase()
        {
            // Match: char, Capital, then the run of lower-case letters.
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_lowercase() {
                j += 1;
            }
            out.push(b[i] as char);
            out.push('_');
            out.push_str(&s[i + 1..j]);
            i = j;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Regex `([a-z0-9])([A-Z])` → `\1_\2`, applied left to right without overlapping matches.
fn split_lower_upper(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if i + 1 < b.len()
            && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit())
            && b[i + 1].is_ascii_uppercase()
        {
            out.push(b[i] as char);
            out.push('_');
            out.push(b[i + 1] as char);
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn collapse_underscores(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_underscore = false;
    for c in s.chars() {
        if c == '_' {
            if !prev_underscore {
                out.push(c);
            }
            prev_underscore = true;
        } else {
            out.push(c);
            prev_underscore = false;
        }
    }
    out
}

/// dlt's `_trim_and_tag`: head + 6-char tag of the original + tail, exactly `max_length` long.
fn trim_and_tag(normalized: &str, original: &str, max_length: usize) -> String {
    let tag = identifier_tag(original);
    if max_length <= tag.len() {
        return tag[..max_length].to_string();
    }
    let remaining = max_length - tag.len();
    let head = remaining / 2 + remaining % 2;
    let tail = remaining / 2;
    // Normalized identifiers are ASCII, so byte slicing is safe.
    format!(
        "{}{}{}",
        &normalized[..head],
        tag,
        &normalized[normalized.len() - tail..]
    )
}

/// The 6-character tag: base64(shake_128(ident)[..4]) without padding, `/`→`a`, `+`→`b`, lower case.
fn identifier_tag(original: &str) -> String {
    shake128_b64(original.as_bytes(), 4)
        .replace('/', "a")
        .replace('+', "b")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> String {
        Naming::default().normalize_identifier(s)
    }

    fn path(s: &str) -> String {
        Naming::default().normalize_path(s)
    }

    #[test]
    fn identifiers_match_dlt_examples() {
        let cases = [
            ("CreatedAt", "created_at"),
            ("createdAt", "created_at"),
            ("user-name", "user_name"),
            ("1st", "_1st"),
            ("123", "_123"),
            ("ÄÖ", "x"),
            ("Ünïcödé", "_n_c_dx"),
            ("a__b", "a_b"),
            ("a___b", "a_b"),
            ("_private", "_private"),
            ("Hello World!", "hello_worldx"),
            ("HTTPResponse", "http_response"),
            ("getHTTPResponseCode", "get_http_response_code"),
            ("userID", "user_id"),
            ("a1B2", "a1_b2"),
            ("camelCase2Snake", "camel_case2_snake"),
            ("a_", "ax"),
            ("col__", "colxx"),
            ("__x__", "_xxx"),
            ("price+tax", "pricextax"),
            ("user@host", "userahost"),
            ("a|b", "alb"),
            ("field.name", "field_name"),
            ("_", "x"),
            ("@", "a"),
            ("_dlt_id", "_dlt_id"),
            ("value", "value"),
            ("  padded ", "padded"),
        ];
        for (input, expected) in cases {
            assert_eq!(ident(input), expected, "identifier {input:?}");
        }
    }

    #[test]
    fn paths_match_dlt_examples() {
        let cases = [
            ("a__b", "a__b"),
            ("a___b", "a___b"),
            ("a_", "ax"),
            ("col__", "col"),
            ("__x__", "x"),
            ("CreatedAt", "created_at"),
        ];
        for (input, expected) in cases {
            assert_eq!(path(input), expected, "path {input:?}");
        }
    }

    #[test]
    fn long_identifiers_are_shortened_with_dlt_tag() {
        let naming = Naming::with_max_length(63);
        let long = "a".repeat(70);
        let short = naming.normalize_identifier(&long);
        assert_eq!(short, format!("{}mo6cba{}", "a".repeat(29), "a".repeat(28)));
        assert_eq!(short.len(), 63);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Identifiers and paths as they come: any text, and text made of the characters the
    /// convention treats specially (case changes, separators, digits, runs of `_`).
    fn raw_name() -> impl Strategy<Value = String> {
        prop_oneof![".{0,24}", "[aAbB_ .@|+*1-]{0,16}", "[a-zA-Z_]{60,90}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_convention_is_idempotent_on_its_own_output_within_the_length_limit(
            raw in raw_name(),
            // Any real limit (PostgreSQL's is 63): room for the 6-character tag and a little.
            max in prop::option::of(10usize..80),
        ) {
            let naming = Naming {
                max_length: max,
                ..Naming::default()
            };
            let ident = naming.normalize_identifier(&raw);
            prop_assert_eq!(naming.normalize_identifier(&ident), ident.clone(), "identifier {:?}", raw);
            let path = naming.normalize_path(&raw);
            // A shortened path may not be: its tag may start a fragment with a digit, which the
            // next pass prefixes with `_` (dlt's names do the same).
            if max.is_none_or(|max| path.len() < max) {
                prop_assert_eq!(naming.normalize_path(&path), path.clone(), "path {:?}", raw);
            }
            if let Some(max) = max {
                prop_assert!(ident.len() <= max, "{ident:?} is longer than {max}");
                prop_assert!(path.len() <= max, "{path:?} is longer than {max}");
            }
            let fragments = naming.shorten_fragments(&[&path, &ident]);
            if let Some(max) = max {
                prop_assert!(fragments.len() <= max, "{fragments:?} is longer than {max}");
            }
        }

        #[test]
        fn long_names_are_shortened_apart_by_their_tag(
            a in "[a-zA-Z]{70,90}",
            b in "[a-zA-Z]{70,90}",
        ) {
            // Two different originals share a shortened name only if their 6-character tags
            // (hashes of the whole original) collide, which these never do.
            let naming = Naming::with_max_length(63);
            let (na, nb) = (naming.normalize_identifier(&a), naming.normalize_identifier(&b));
            prop_assert_eq!(na == nb, a.trim() == b.trim(), "{} and {} give {}", a, b, na);
        }
    }
}
