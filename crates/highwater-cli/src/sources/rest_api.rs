//! The `rest_api` source: pages of records from an HTTP JSON API, with dlt's paginators, the
//! incremental range pushed into the query, and retries on 429/5xx honouring Retry-After.
//!
//! `https://` goes through rustls with the Mozilla root certificates (`webpki-roots`), so the
//! binary needs no system OpenSSL.

mod detect;

use std::time::{Duration, Instant};

use highwater::incremental::CursorPath;
use highwater::{Error, Item, Resource};
use indexmap::IndexMap;
use serde_json::Value;

/// How the next page is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Paginator {
    /// One request.
    SinglePage,
    /// The next URL is in the body at `next_url_path`.
    JsonLink { next_url_path: CursorPath },
    /// The next URL is in the `Link: <…>; rel="next"` header.
    HeaderLink,
    /// `offset`/`limit` parameters; stops at `total_path` or at the first empty page.
    Offset {
        limit: u64,
        offset: u64,
        offset_param: String,
        limit_param: String,
        total_path: Option<CursorPath>,
    },
    /// A page number parameter; stops at `total_path` (number of pages) or the first empty page.
    PageNumber {
        base_page: u64,
        page_param: String,
        total_path: Option<CursorPath>,
    },
    /// A cursor from the body at `cursor_path`, sent as `cursor_param`.
    Cursor {
        cursor_path: CursorPath,
        cursor_param: String,
    },
}

impl Paginator {
    /// The paginator as the line to write under `[resources.source]`.
    pub fn toml_line(&self) -> String {
        let fields = match self {
            Paginator::SinglePage => "type = \"single_page\"".to_string(),
            Paginator::JsonLink { next_url_path } => format!(
                "type = \"json_link\", next_url_path = {:?}",
                next_url_path.as_str()
            ),
            Paginator::HeaderLink => "type = \"header_link\"".to_string(),
            Paginator::Offset {
                limit,
                offset,
                offset_param,
                limit_param,
                total_path,
            } => {
                let mut line = format!(
                    "type = \"offset\", limit = {limit}, offset = {offset}, offset_param = {offset_param:?}, limit_param = {limit_param:?}"
                );
                if let Some(total) = total_path {
                    line.push_str(&format!(", total_path = {:?}", total.as_str()));
                }
                line
            }
            Paginator::PageNumber {
                base_page,
                page_param,
                total_path,
            } => {
                let mut line = format!(
                    "type = \"page_number\", base_page = {base_page}, page_param = {page_param:?}"
                );
                if let Some(total) = total_path {
                    line.push_str(&format!(", total_path = {:?}", total.as_str()));
                }
                line
            }
            Paginator::Cursor {
                cursor_path,
                cursor_param,
            } => format!(
                "type = \"cursor\", cursor_path = {:?}, cursor_param = {cursor_param:?}",
                cursor_path.as_str()
            ),
        };
        format!("paginator = {{ {fields} }}")
    }
}

/// A configured REST source (secrets already resolved).
#[derive(Clone)]
pub struct RestApi {
    /// The first URL.
    pub url: String,
    /// Query parameters; values may hold `{incremental.start_value}` / `{incremental.end_value}`.
    pub params: IndexMap<String, String>,
    /// Request headers.
    pub headers: IndexMap<String, String>,
    /// A bearer token.
    pub bearer: Option<String>,
    /// Where the records are in the body; unset: guessed from the first response as dlt does.
    pub data_selector: Option<CursorPath>,
    /// Pagination; unset: guessed from the first response as dlt does.
    pub paginator: Option<Paginator>,
}

/// Attempts per request before the run fails, and the time they may take together.
const MAX_ATTEMPTS: u32 = 5;
const MAX_RETRY_TIME: Duration = Duration::from_secs(60);

impl std::fmt::Debug for RestApi {
    /// Never shows secrets: only the URL without its query.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestApi({})", public_url(&self.url))
    }
}

/// The URL without its query string, which may carry secrets.
fn public_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// A resource named `name` reading the API.
pub fn rest_resource(name: &str, api: RestApi) -> Resource {
    let resource_name = name.to_string();
    Resource::new(name, move |ctx| {
        let mut params = IndexMap::new();
        for (key, template) in &api.params {
            if let Some(value) = render(template, ctx.incremental())? {
                params.insert(key.clone(), value);
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Pages {
            api: api.clone(),
            selector: api.data_selector.clone().map(Some),
            paginator: api.paginator.clone(),
            agent,
            params,
            next: Some(api.url.clone()),
            page: 0,
            resource: resource_name.clone(),
            done: false,
            selector_warned: false,
        })
    })
}

/// Renders `{incremental.start_value}` / `{incremental.end_value}`; `None` when a bound is unset.
fn render(
    template: &str,
    incremental: Option<&highwater::IncrementalView>,
) -> Result<Option<String>, Error> {
    let mut out = template.to_string();
    for (placeholder, value) in [
        (
            "{incremental.start_value}",
            incremental.and_then(|i| i.start_value()),
        ),
        (
            "{incremental.end_value}",
            incremental.and_then(|i| i.end_value()),
        ),
    ] {
        if !out.contains(placeholder) {
            continue;
        }
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out = out.replace(placeholder, &text);
    }
    Ok(Some(out))
}

struct Pages {
    api: RestApi,
    /// The records' path: `Some(None)` is the whole body; `None` until guessed.
    selector: Option<Option<CursorPath>>,
    /// The paginator, `None` until guessed from the first response.
    paginator: Option<Paginator>,
    agent: ureq::Agent,
    params: IndexMap<String, String>,
    next: Option<String>,
    page: u64,
    resource: String,
    done: bool,
    /// Whether the run already said that the data selector found nothing.
    selector_warned: bool,
}

impl Pages {
    fn fail(&self, message: String) -> Error {
        Error::Resource {
            resource: self.resource.clone(),
            message,
        }
    }

    /// One GET with retries; returns the body and the `Link` header.
    fn get(&self, url: &str, extra: &[(String, String)]) -> Result<(Value, Option<String>), Error> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.agent.get(url);
            for (k, v) in self.params.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
                request = request.query(k, v);
            }
            for (k, v) in &self.api.headers {
                request = request.header(k.as_str(), v.as_str());
            }
            if let Some(token) = &self.api.bearer {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let outcome = request.call();
            let (status, retry_after) = match outcome {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        let link = response
                            .headers()
                            .get("link")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let text = response
                            .body_mut()
                            .with_config()
                            .limit(1 << 30)
                            .read_to_string()
                            .map_err(|e| {
                                self.fail(format!("GET {}: reading the body: {e}", public_url(url)))
                            })?;
                        let body = highwater::json::from_slice(text.as_bytes()).map_err(|e| {
                            Error::InvalidJson {
                                location: public_url(url).to_string(),
                                message: e.to_string(),
                            }
                        })?;
                        return Ok((body, link));
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                    (status, retry_after)
                }
                Err(e) => {
                    if attempt >= MAX_ATTEMPTS || started.elapsed() > MAX_RETRY_TIME {
                        return Err(self.fail(format!("GET {}: {e}", public_url(url))));
                    }
                    (0, None)
                }
            };
            let retryable = status == 0 || status == 429 || status >= 500;
            if !retryable || attempt >= MAX_ATTEMPTS || started.elapsed() > MAX_RETRY_TIME {
                return Err(self.fail(format!(
                    "GET {} failed with HTTP status {status} after {attempt} attempt(s)",
                    public_url(url)
                )));
            }
            let backoff =
                retry_after.unwrap_or_else(|| Duration::from_millis(250 << (attempt - 1)));
            tracing::warn!(
                url = public_url(url),
                status,
                attempt,
                "retrying after {:?}",
                backoff
            );
            std::thread::sleep(backoff.min(MAX_RETRY_TIME.saturating_sub(started.elapsed())));
        }
    }

    fn records(&mut self, body: &Value, url: &str) -> Vec<Value> {
        if self.selector.is_none() {
            let guess = detect::records_path(body);
            tracing::info!(
                "resource {}: no data_selector set; the records are {}",
                self.resource,
                match &guess {
                    Some(path) => format!("at data_selector = {:?}", path.as_str()),
                    None => "the whole body".to_string(),
                }
            );
            self.selector = Some(guess);
        }
        let selector = self.selector.clone().flatten();
        let selected = match selector {
            Some(path) => match path.find(body) {
                Some(found) => found.clone(),
                None => {
                    self.warn_selector_missed(&path, body, url);
                    Value::Null
                }
            },
            None => body.clone(),
        };
        match selected {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => vec![other],
        }
    }
}

impl Pages {
    /// A selector that finds nothing on a page that has content is most likely wrong: said once
    /// per run, with what the page has instead.
    fn warn_selector_missed(&mut self, path: &CursorPath, body: &Value, url: &str) {
        if self.selector_warned {
            return;
        }
        let content = match body {
            Value::Object(map) if !map.is_empty() => format!(
                "its top-level keys are {}",
                map.keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Array(items) if !items.is_empty() => {
                format!("it is a list of {} items (the body itself)", items.len())
            }
            _ => return,
        };
        self.selector_warned = true;
        tracing::warn!(
            "resource {}: data_selector = {:?} matches nothing on the page from {}; {content}",
            self.resource,
            path.as_str(),
            public_url(url)
        );
    }
}

impl Iterator for Pages {
    type Item = Result<Item, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let url = self.next.take()?;
        let extra: Vec<(String, String)> = match &self.paginator {
            Some(Paginator::Offset {
                limit,
                offset,
                offset_param,
                limit_param,
                ..
            }) => vec![
                (
                    offset_param.clone(),
                    (offset + self.page * limit).to_string(),
                ),
                (limit_param.clone(), limit.to_string()),
            ],
            Some(Paginator::PageNumber {
                base_page,
                page_param,
                ..
            }) => vec![(page_param.clone(), (base_page + self.page).to_string())],
            _ => Vec::new(),
        };
        let (body, link) = match self.get(&url, &extra) {
            Ok(page) => page,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let records = self.records(&body, &url);
        let paginator = match &self.paginator {
            Some(paginator) => paginator.clone(),
            None => {
                let has_next_link = link.as_deref().and_then(next_link).is_some();
                let (guess, certain) = detect::paginator(&body, has_next_link);
                let line = guess.toml_line();
                if certain {
                    tracing::info!(
                        "resource {}: no paginator set; the first page says: {line}",
                        self.resource
                    );
                } else {
                    tracing::warn!(
                        "resource {}: no paginator set, guessed from the first page: {line} \
                         (write that line under [resources.source] to be sure)",
                        self.resource
                    );
                }
                self.paginator = Some(guess.clone());
                guess
            }
        };
        self.page += 1;
        self.next = match &paginator {
            Paginator::SinglePage => None,
            Paginator::JsonLink { next_url_path } => next_url_path
                .find(&body)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|next| {
                    // A relative link continues on the same host; the query of the first request no
                    // longer applies once the API hands out its own next URL.
                    self.params.clear();
                    join_url(&url, next)
                }),
            Paginator::HeaderLink => link.as_deref().and_then(next_link).map(|next| {
                self.params.clear();
                join_url(&url, &next)
            }),
            Paginator::Offset {
                limit,
                offset,
                total_path,
                ..
            } => {
                let seen = offset + self.page * limit;
                let more = !records.is_empty()
                    && match total_path
                        .as_ref()
                        .and_then(|p| p.find(&body))
                        .and_then(Value::as_u64)
                    {
                        Some(total) => seen < total,
                        None => true,
                    };
                more.then_some(url)
            }
            Paginator::PageNumber {
                base_page,
                total_path,
                ..
            } => {
                let more = !records.is_empty()
                    && match total_path
                        .as_ref()
                        .and_then(|p| p.find(&body))
                        .and_then(|v| match v {
                            Value::String(s) => s.trim().parse::<u64>().ok(),
                            other => other.as_u64(),
                        }) {
                        Some(pages) => base_page + self.page < pages + base_page,
                        None => true,
                    };
                more.then_some(url)
            }
            Paginator::Cursor {
                cursor_path,
                cursor_param,
            } => match cursor_path.find(&body) {
                Some(Value::String(c)) if !c.is_empty() => {
                    self.params.insert(cursor_param.clone(), c.clone());
                    Some(url)
                }
                Some(Value::Number(n)) => {
                    self.params.insert(cursor_param.clone(), n.to_string());
                    Some(url)
                }
                _ => None,
            },
        };
        if records.is_empty() && self.next.is_none() {
            return None;
        }
        Some(Ok(Item::Page(records)))
    }
}

/// The `rel="next"` target of an RFC 8288 Link header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// `next` made absolute against `base` when it is a path.
fn join_url(base: &str, next: &str) -> String {
    if next.starts_with("http://") || next.starts_with("https://") {
        return next.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if next.starts_with('/') {
        format!("{}{next}", &base[..host_end])
    } else {
        let dir_end = public_url(base)
            .rfind('/')
            .filter(|&i| i >= host_end)
            .unwrap_or(host_end);
        format!("{}/{next}", &base[..dir_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_and_relative_urls() {
        assert_eq!(
            next_link("<http://h/a?page=2>; rel=\"next\", <http://h/a?page=9>; rel=\"last\"")
                .as_deref(),
            Some("http://h/a?page=2")
        );
        assert_eq!(next_link("<http://h/a?page=9>; rel=\"last\""), None);
        assert_eq!(
            join_url("http://h:1/api/items?x=1", "/api/items?page=2"),
            "http://h:1/api/items?page=2"
        );
        assert_eq!(
            join_url("http://h:1/api/items", "next?page=2"),
            "http://h:1/api/next?page=2"
        );
    }

    #[test]
    fn paginators_print_as_the_toml_line_to_paste() {
        let path = |p: &str| CursorPath::parse(p).unwrap();
        assert_eq!(
            Paginator::JsonLink {
                next_url_path: path("links.next")
            }
            .toml_line(),
            "paginator = { type = \"json_link\", next_url_path = \"links.next\" }"
        );
        assert_eq!(
            Paginator::PageNumber {
                base_page: 1,
                page_param: "page".into(),
                total_path: Some(path("total_pages")),
            }
            .toml_line(),
            "paginator = { type = \"page_number\", base_page = 1, page_param = \"page\", total_path = \"total_pages\" }"
        );
        // Each line reads back as the paginator it prints.
        for paginator in [
            Paginator::SinglePage,
            Paginator::HeaderLink,
            Paginator::Cursor {
                cursor_path: path("cursors.next"),
                cursor_param: "cursor".into(),
            },
            Paginator::Offset {
                limit: 10,
                offset: 0,
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                total_path: None,
            },
        ] {
            let table: toml::Table = toml::from_str(&paginator.toml_line()).unwrap();
            assert!(table["paginator"].get("type").is_some(), "{table}");
        }
    }

    #[test]
    fn debug_never_shows_the_query() {
        let api = RestApi {
            url: "http://h/x?token=SECRET".into(),
            params: IndexMap::new(),
            headers: IndexMap::new(),
            bearer: Some("SECRET".into()),
            data_selector: None,
            paginator: None,
        };
        assert!(!format!("{api:?}").contains("SECRET"));
    }
}
