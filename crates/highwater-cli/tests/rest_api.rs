//! The `rest_api` source against a real HTTP server on 127.0.0.1 started by each test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

mod support;

use support::highwater;

/// A response: status, extra headers, body.
type Reply = (u16, Vec<(String, String)>, String);

/// Serves `handler(path_and_query, authorization)` on a free port; returns the base URL and a
/// request counter. The server thread ends with the test process.
fn serve(
    handler: impl Fn(&str, Option<&str>, &str) -> Reply + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let base_for_handler = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let (status, headers, body) = handler(&target, auth.as_deref(), &base_for_handler);
            let mut response = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (base, count)
}

fn query(target: &str, key: &str) -> Option<String> {
    target.split_once('?')?.1.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%2B", "+"))
    })
}

fn events(range: std::ops::Range<i64>) -> Vec<Value> {
    range.map(|i| json!({"id": i, "updated_at": format!("2024-01-01T00:{:02}:00Z", i), "tags": ["x"]})).collect()
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(source: &str, incremental: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let incremental = if incremental {
            "\n[resources.incremental]\ncursor_path = \"updated_at\"\ninitial_value = \"2024-01-01T00:00:00Z\"\n"
        } else {
            ""
        };
        let text = format!(
            "[pipeline]\nname = \"api\"\ndestination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"\n\n[[resources]]\nname = \"events\"\nwrite_disposition = \"merge\"\nprimary_key = \"id\"\n\n[resources.source]\nkind = \"rest_api\"\n{source}\n{incremental}"
        );
        std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
        Project { dir }
    }

    fn run(&self, envs: &[(&str, &str)]) -> Output {
        let mut cmd = highwater();
        cmd.current_dir(self.dir.path())
            .args(["run", "pipeline.toml", "--json", "--progress", "log"])
            // The binary's default log level: these tests read its messages.
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = duckdb::Connection::open(self.dir.path().join("out.duckdb")).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn tables(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["tables"].clone()
}

#[test]
fn json_link_with_a_server_that_ignores_since() {
    let (base, count) = serve(|target, _, _| {
        let page = query(target, "p").unwrap_or_else(|| "1".into());
        let since = query(target, "since");
        // The server ignores `since`; it only checks it was sent on the first page.
        if page == "1" && since.is_none() {
            return (400, vec![], "{\"error\": \"since missing\"}".into());
        }
        let body = match page.as_str() {
            "1" => json!({"data": events(1..4), "next": "/events?p=2"}),
            _ => json!({"data": events(4..6), "next": null}),
        };
        (200, vec![], body.to_string())
    });
    let p = Project::new(
        &format!("url = \"{base}/events\"\nparams = {{ since = \"{{incremental.start_value}}\" }}\ndata_selector = \"data\"\npaginator = {{ type = \"json_link\", next_url_path = \"next\" }}"),
        true,
    );
    assert_eq!(tables(&p.run(&[]))["events"], 5);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let again = p.run(&[]);
    assert!(
        tables(&again).as_object().unwrap().is_empty(),
        "everything was loaded already"
    );
    assert_eq!(p.count("SELECT count(*) FROM raw.events"), 5);
}

#[test]
fn offset_page_number_cursor_and_header_link_paginators() {
    let all: Vec<Value> = events(0..7);
    let data = all.clone();
    let (base, _) = serve(move |target, _, base| {
        let path = target.split('?').next().unwrap();
        let slice =
            |from: usize, n: usize| data.iter().skip(from).take(n).cloned().collect::<Vec<_>>();
        let body = match path {
            "/offset" => {
                let off: usize = query(target, "offset").unwrap().parse().unwrap();
                json!({"items": slice(off, 3), "total": 7})
            }
            "/pages" => {
                let page: usize = query(target, "page").unwrap().parse().unwrap();
                json!({"items": slice((page - 1) * 3, 3)})
            }
            "/cursor" => {
                let at: usize = query(target, "cursor")
                    .map(|c| c.parse().unwrap())
                    .unwrap_or(0);
                let next = if at + 3 < 7 {
                    json!((at + 3).to_string())
                } else {
                    json!(null)
                };
                json!({"items": slice(at, 3), "cursors": {"next": next}})
            }
            "/links" => {
                let at: usize = query(target, "at").map(|c| c.parse().unwrap()).unwrap_or(0);
                let headers = if at + 3 < 7 {
                    vec![(
                        "Link".to_string(),
                        format!("<{base}/links?at={}>; rel=\"next\"", at + 3),
                    )]
                } else {
                    vec![]
                };
                return (200, headers, json!(slice(at, 3)).to_string());
            }
            _ => return (404, vec![], "{}".into()),
        };
        (200, vec![], body.to_string())
    });
    for (path, paginator) in [
        (
            "offset",
            "{ type = \"offset\", limit = 3, total_path = \"total\" }",
        ),
        (
            "pages",
            "{ type = \"page_number\", base_page = 1, page_param = \"page\" }",
        ),
        (
            "cursor",
            "{ type = \"cursor\", cursor_path = \"cursors.next\", cursor_param = \"cursor\" }",
        ),
        ("links", "{ type = \"header_link\" }"),
    ] {
        let p = Project::new(
            &format!("url = \"{base}/{path}\"\npaginator = {paginator}"),
            false,
        );
        assert_eq!(tables(&p.run(&[]))["events"], 7, "{path}");
        assert_eq!(
            p.count("SELECT count(DISTINCT id) FROM raw.events"),
            7,
            "{path}"
        );
    }
}

#[test]
fn retries_429_then_fails_clearly_on_a_persistent_500() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let (base, _) = serve(move |target, _, _| {
        if target.starts_with("/flaky") {
            if h.fetch_add(1, Ordering::SeqCst) == 0 {
                return (429, vec![("Retry-After".into(), "0".into())], "{}".into());
            }
            return (200, vec![], json!(events(0..2)).to_string());
        }
        (500, vec![], "{\"error\": \"boom\"}".into())
    });
    let p = Project::new(&format!("url = \"{base}/flaky\""), false);
    assert_eq!(tables(&p.run(&[]))["events"], 2);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let p = Project::new(&format!("url = \"{base}/broken?token=hidden\""), false);
    let out = p.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{base}/broken")) && err.contains("500"),
        "{err}"
    );
    assert!(!err.contains("hidden"), "the query may hold secrets: {err}");
    assert!(!p.dir.path().join("work/state.json").exists());
}

#[test]
fn bearer_secret_is_sent_and_never_printed() {
    let (base, _) = serve(|_, auth, _| match auth {
        Some("Bearer s3cr3t-value") => (200, vec![], json!(events(0..3)).to_string()),
        _ => (401, vec![], "{}".into()),
    });
    let p = Project::new(&format!("url = \"{base}/private\"\nauth = {{ type = \"bearer\", token = \"{{secrets.api_token}}\" }}"), false);
    let missing = p.run(&[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("secret \"api_token\" is not set"));
    let out = p.run(&[("API_TOKEN", "s3cr3t-value"), ("RUST_LOG", "trace")]);
    assert_eq!(tables(&out)["events"], 3);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("s3cr3t-value"),
        "secret leaked: {printed}"
    );
    // From secrets.toml beside the pipeline file.
    std::fs::write(
        p.dir.path().join("secrets.toml"),
        "api_token = \"s3cr3t-value\"\n",
    )
    .unwrap();
    let out = p.run(&[("RUST_LOG", "debug")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t-value"));
}

#[test]
fn https_urls_speak_tls() {
    // A listener that records the first byte the client sends: 0x16 opens a TLS handshake.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let first = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut stream, &mut byte).unwrap();
        byte[0]
    });
    let p = Project::new(&format!("url = \"https://127.0.0.1:{port}/events\""), false);
    let out = p.run(&[("HIGHWATER_LOCK_TIMEOUT", "5")]);
    assert_eq!(first.join().unwrap(), 0x16, "a TLS ClientHello");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("https://127.0.0.1:{port}/events")),
        "{err}"
    );
}

/// Without `data_selector` and `paginator`, the first response decides, by dlt's rules: records
/// under a record key (`results`), the next page from a `next` URL in the body.
#[test]
fn records_and_paginator_are_guessed_like_dlt() {
    let (base, count) = serve(|target, _, _| {
        if target.starts_with("/pages") {
            // dlt's guessed page numbers: no page first, then page=1, stop at total_pages.
            let body = match query(target, "page").as_deref() {
                None => json!({"data": events(20..22), "total_pages": 2}),
                Some("1") => json!({"data": events(10..12), "total_pages": 2}),
                _ => json!({"error": "past the last page"}),
            };
            return (200, vec![], body.to_string());
        }
        let body = match query(target, "p").as_deref() {
            None => json!({"meta": {"tags": ["x"]}, "results": events(0..3), "next": "/guess?p=2"}),
            Some("2") => json!({"meta": {"tags": []}, "results": events(3..5), "next": null}),
            _ => json!({"error": "no such page"}),
        };
        (200, vec![], body.to_string())
    });
    let p = Project::new(&format!("url = \"{base}/guess\""), false);
    let out = p.run(&[]);
    assert_eq!(tables(&out)["events"], 5);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(p.count("SELECT count(*) FROM raw.events__tags"), 5);

    let before = count.load(Ordering::SeqCst);
    let p = Project::new(&format!("url = \"{base}/pages\""), false);
    let out = p.run(&[]);
    assert_eq!(tables(&out)["events"], 4);
    // An uncertain guess is said as the line to write in the pipeline file.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("paginator = { type = \"page_number\", base_page = 0, page_param = \"page\", total_path = \"total_pages\" }")
            && !err.contains("PageNumber"),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst) - before, 2);
    assert_eq!(
        p.count("SELECT count(*) FROM raw.events WHERE id IN (10, 11, 20, 21)"),
        4
    );
}

/// SPEC §8: no secret is printed at any log level, the HTTP library's own trace output
/// included, nor in the error naming a URL: a bearer token, a secret query parameter and a
/// secret in the URL's path.
#[test]
fn secrets_in_token_query_and_path_are_never_printed_even_at_trace_level() {
    const TOKEN: &str = "tok-3f9a1c77";
    const KEY: &str = "key/with spaces+7b2e";
    const KEY_IN_QUERY: &str = "key%2Fwith%20spaces%2B7b2e";
    const ACCOUNT: &str = "acct-5d41402a";
    let (base, _) = serve(|target, auth, _| {
        let path = target.split('?').next().unwrap_or("");
        let key = target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("key=")));
        if auth != Some(&*format!("Bearer {TOKEN}")) || key != Some(KEY_IN_QUERY) {
            return (401, vec![], "{}".into());
        }
        if path == format!("/v1/{ACCOUNT}/events") {
            return (200, vec![], json!(events(0..3)).to_string());
        }
        (404, vec![], "{}".into())
    });
    let source = |path: &str| {
        format!(
            "url = \"{base}/v1/{{secrets.account}}/{path}\"\nparams = {{ key = \"{{secrets.api_key}}\" }}\nauth = {{ type = \"bearer\", token = \"{{secrets.api_token}}\" }}\npaginator = {{ type = \"single_page\" }}"
        )
    };
    let secrets = [
        ("API_TOKEN", TOKEN),
        ("API_KEY", KEY),
        ("ACCOUNT", ACCOUNT),
        ("RUST_LOG", "trace"),
    ];
    let printed = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let p = Project::new(&source("events"), false);
    let out = p.run(&secrets);
    assert_eq!(tables(&out)["events"], 3);
    let text = printed(&out);
    assert!(text.contains(" INFO "), "a verbose run: {text}");
    for secret in [TOKEN, KEY, KEY_IN_QUERY, ACCOUNT] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }

    let p = Project::new(&source("missing"), false);
    let out = p.run(&secrets);
    assert_eq!(out.status.code(), Some(1));
    let text = printed(&out);
    assert!(
        text.contains(&format!("{base}/v1/***/missing")) && text.contains("404"),
        "{text}"
    );
    for secret in [TOKEN, KEY, KEY_IN_QUERY, ACCOUNT] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
}

/// A data selector that finds nothing on a page with content is said, with what the page has.
#[test]
fn a_data_selector_that_matches_nothing_is_said_with_the_page_keys() {
    let (base, _) = serve(|_, _, _| {
        let body = json!({"results": events(0..2), "count": 2});
        (200, vec![], body.to_string())
    });
    let p = Project::new(
        &format!("url = \"{base}/x\"\ndata_selector = \"data\"\npaginator = {{ type = \"single_page\" }}"),
        false,
    );
    let out = p.run(&[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "resource events: data_selector = \"data\" matches nothing on the page from {base}/x; its top-level keys are"
        )) && err.contains("\"results\"")
            && err.contains("\"count\""),
        "{err}"
    );
}
