//! One redaction layer for everything the command prints. Every secret the pipeline file
//! resolves (`{secrets.NAME}`) is registered here, and errors, logs and warnings pass through
//! [`redact`], which replaces each secret, in every form it takes in a URL, with `***`. Other
//! libraries' logs are capped at `info` whatever `RUST_LOG` says ([`third_party_capped`]): their
//! debug and trace output dumps raw requests, headers included.

use std::borrow::Cow;
use std::sync::RwLock;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// The secret values resolved so far, in every printed form, longest first.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// The characters the HTTP client percent-encodes in a query value (the WHATWG query set).
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Registers a resolved secret value: from now on it is never printed, neither as written nor
/// percent-encoded as it goes into a URL.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let query = utf8_percent_encode(secret, QUERY).to_string();
    let forms = [
        secret.to_string(),
        query.replace("%20", "+"),
        query,
        utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
    ];
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the password of a `scheme://user:password@host/...` URL written in the pipeline
/// file, and the credentials the environment hands to the destinations.
pub fn register_credentials(url: Option<&str>) {
    if let Some((_, rest)) = url.and_then(|u| u.split_once("://")) {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                register(password);
            }
        }
    }
    for variable in ["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(value) = std::env::var(variable) {
            register(&value);
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Whether a log event of another library at `level` is dropped: only errors, warnings and
/// `info` pass, whatever `RUST_LOG` asks for.
pub fn third_party_capped(target: &str, level: &tracing::Level) -> bool {
    let ours = target == "highwater"
        || target.starts_with("highwater::")
        || target.starts_with("highwater_cli");
    !ours && *level > tracing::Level::INFO
}

/// The log writer: each event is formatted whole, redacted, then written to stderr.
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_as_written_and_as_url_encoded() {
        register("p@ss w/rd:1");
        register("tok");
        let text = "GET http://h/p%40ss%20w%2Frd%3A1/x?k=p%40ss+w%2Frd%3A1&t=tok (p@ss w/rd:1)";
        let out = redact(text);
        assert_eq!(out, "GET http://h/***/x?k=***&t=*** (***)");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn passwords_in_urls_are_registered() {
        register_credentials(Some(
            "postgres://loader:hunter2secret@db:5432/x?sslmode=require",
        ));
        assert_eq!(redact("auth failed: hunter2secret"), "auth failed: ***");
        register_credentials(Some("sqlite:shop.db"));
    }

    #[test]
    fn other_libraries_are_capped_at_info() {
        use tracing::Level;
        assert!(third_party_capped("ureq_proto::client", &Level::TRACE));
        assert!(third_party_capped("rustls::conn", &Level::DEBUG));
        assert!(!third_party_capped("ureq", &Level::WARN));
        assert!(!third_party_capped("highwater::pipeline", &Level::TRACE));
        assert!(!third_party_capped("highwater_cli::sources", &Level::DEBUG));
    }
}
