//! The `sql` source: the rows of a PostgreSQL or SQLite table or query, as dlt's `sql_database`
//! gives them (one JSON object per row, keyed by column name, with the column types, nullability
//! and primary key carried over as hints).
//!
//! Rows are read on a reader thread in chunks of `chunk_size`: PostgreSQL through a portal in a
//! read-only transaction, SQLite by stepping the statement. At most two chunks are in memory
//! whatever the table's size. The incremental range goes into the query's `WHERE` as parameters,
//! with the operators dlt's `TableLoader` uses; the library's incremental still filters and
//! dedups the rows, so the pushdown only has to never drop a row the range keeps.

mod postgres_rows;
mod sqlite_rows;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use highwater::{ColumnHint, DataType, Error, Hints, Item, OnCursorMissing, Resource};
use serde_json::{Map, Value};

/// Where the rows live.
#[derive(Clone, PartialEq)]
pub enum Connection {
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A SQLite database file.
    Sqlite(PathBuf),
}

impl Connection {
    /// Parses `postgres://…` or `sqlite:PATH` (a relative PATH is relative to `base`).
    pub fn parse(text: &str, base: &Path) -> Result<Connection, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Connection::Postgres(text.to_string()));
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite: needs a file path, e.g. \"sqlite:data/shop.db\"".into());
            }
            return Ok(Connection::Sqlite(base.join(path)));
        }
        Err(format!(
            "unknown connection {:?}: use \"postgres://USER@HOST:PORT/DB\" or \"sqlite:PATH\"",
            public_connection(text)
        ))
    }

    /// The connection as it may be shown: without a password.
    pub fn public(&self) -> String {
        match self {
            Connection::Postgres(url) => public_connection(url),
            Connection::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

impl std::fmt::Debug for Connection {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.public())
    }
}

/// A URL with the password of its user info replaced by `***`.
fn public_connection(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = user_info.split(':').next().unwrap_or("");
    let masked = if user_info.contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    // A password in the query (`?password=…`) is dropped with the whole query.
    let tail = tail.split('?').next().unwrap_or("");
    format!("{scheme}://{masked}@{host}{tail}")
}

/// What is read: a whole table or the rows of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// A table name, optionally `schema.table`.
    Table(String),
    /// A `SELECT` statement.
    Query(String),
}

/// How the incremental's range becomes a `WHERE` clause (dlt's `TableLoader._make_query`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pushdown {
    /// The cursor column (a top-level column of the rows).
    pub column: String,
    /// `last_value_func = "min"`: the range runs downwards.
    pub min: bool,
    /// `range_start = "open"`: the start value itself is excluded.
    pub start_open: bool,
    /// `range_end = "closed"`: the end value itself is included.
    pub end_closed: bool,
    /// Rows whose cursor is NULL.
    pub on_missing: OnCursorMissing,
    /// Rows ordered by the cursor descending (else ascending).
    pub descending: bool,
}

/// A configured `sql` source.
#[derive(Debug, Clone)]
pub struct SqlSource {
    /// The database.
    pub connection: Connection,
    /// The table or query.
    pub selection: Selection,
    /// Rows per chunk (dlt's default: 50,000).
    pub chunk_size: usize,
    /// The incremental range pushed into the query, if the resource has a cursor column.
    pub pushdown: Option<Pushdown>,
}

/// A column of the result as reflected from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ReflectedColumn {
    /// The name as the database gives it.
    pub name: String,
    /// The dlt type, when the database type has one.
    pub data_type: Option<DataType>,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Decimal precision.
    pub precision: Option<u32>,
    /// Decimal scale.
    pub scale: Option<u32>,
    /// `false` for a timestamp without time zone.
    pub timezone: Option<bool>,
}

/// The columns of the result and the table's primary key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reflection {
    /// Result columns in order.
    pub columns: Vec<ReflectedColumn>,
    /// The table's primary key (empty for queries and tables without one).
    pub primary_key: Vec<String>,
}

impl Reflection {
    /// The hints dlt's reflection level "full" gives: type, nullability, decimal precision and
    /// scale, and the primary key.
    pub fn hints(&self) -> Hints {
        let mut hints = Hints::default();
        for column in &self.columns {
            hints.columns.insert(
                column.name.clone(),
                ColumnHint {
                    data_type: column.data_type,
                    nullable: Some(column.nullable),
                    precision: column.precision,
                    scale: column.scale,
                    timezone: column.timezone,
                    ..ColumnHint::default()
                },
            );
        }
        if !self.primary_key.is_empty() {
            hints.primary_key = Some(self.primary_key.clone());
        }
        hints
    }

    fn column(&self, name: &str) -> Option<&ReflectedColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The incremental range as this run sees it.
#[derive(Debug, Clone, Default)]
struct Range {
    start: Option<Value>,
    end: Option<Value>,
}

/// Reads the source's column types and primary key (connects to the database).
pub fn reflect(source: &SqlSource) -> Result<Reflection, String> {
    match &source.connection {
        Connection::Postgres(url) => postgres_rows::reflect(url, &source.selection),
        Connection::Sqlite(path) => sqlite_rows::reflect(path, &source.selection),
    }
    .map_err(|e| format!("{}: {e}", source.connection.public()))
}

/// A resource over the source's rows; `reflection` gives its hints (see [`reflect`]).
pub fn sql_resource(name: &str, source: SqlSource, reflection: Reflection) -> Resource {
    let hints = reflection.hints();
    let resource_name = name.to_string();
    Resource::new(name, move |ctx| {
        let range = ctx
            .incremental()
            .map(|view| Range {
                start: view.start_value().filter(|v| !v.is_null()),
                end: view.end_value().filter(|v| !v.is_null()),
            })
            .unwrap_or_default();
        let pushdown = source
            .pushdown
            .as_ref()
            .filter(|p| reflection.column(&p.column).is_some());
        Ok(read_chunks(
            resource_name.clone(),
            source.clone(),
            reflection.clone(),
            pushdown.cloned(),
            range,
        ))
    })
    .with_hints(hints)
}

/// The `WHERE … ORDER BY …` tail for `pushdown` over `range`, with the parameters it uses.
/// `placeholder(n)` spells the n-th (1-based) parameter and `column` the quoted cursor column.
fn where_clause(
    pushdown: &Pushdown,
    range: &Range,
    column: &str,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Value>) {
    let mut params = Vec::new();
    let mut condition = String::new();
    if let Some(start) = &range.start {
        params.push(start.clone());
        let op = match (pushdown.min, pushdown.start_open) {
            (false, false) => ">=",
            (false, true) => ">",
            (true, false) => "<=",
            (true, true) => "<",
        };
        condition = format!("{column} {op} {}", placeholder(params.len()));
        if let Some(end) = &range.end {
            params.push(end.clone());
            let op = match (pushdown.min, pushdown.end_closed) {
                (false, false) => "<",
                (false, true) => "<=",
                (true, false) => ">",
                (true, true) => ">=",
            };
            condition = format!(
                "{condition} AND {column} {op} {}",
                placeholder(params.len())
            );
        }
        if pushdown.on_missing == OnCursorMissing::Include {
            condition = format!("({condition}) OR {column} IS NULL");
        }
    }
    if pushdown.on_missing == OnCursorMissing::Exclude {
        condition = if condition.is_empty() {
            format!("{column} IS NOT NULL")
        } else {
            format!("({condition}) AND {column} IS NOT NULL")
        };
    }
    let mut tail = String::new();
    if !condition.is_empty() {
        tail = format!(" WHERE {condition}");
    }
    let direction = if pushdown.descending { "DESC" } else { "ASC" };
    tail.push_str(&format!(" ORDER BY {column} {direction}"));
    (tail, params)
}

/// A double-quoted SQL identifier (both databases quote the same way).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, each part quoted.
fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// The statement the rows come from, before any wrapping.
fn inner_query(selection: &Selection) -> String {
    match selection {
        Selection::Table(table) => format!("SELECT * FROM {}", quote_table(table)),
        Selection::Query(query) => query.trim().trim_end_matches(';').to_string(),
    }
}

/// What the reader thread sends: a chunk of rows, or the error that ended the read.
type Chunk = Result<Vec<Value>, String>;

/// The rows as items, one page per chunk, read on a thread so the database streams while the
/// pipeline works on the previous chunk. Dropping the iterator stops the reader.
fn read_chunks(
    resource: String,
    source: SqlSource,
    reflection: Reflection,
    pushdown: Option<Pushdown>,
    range: Range,
) -> ChunkIter {
    let (sender, receiver) = mpsc::sync_channel::<Chunk>(1);
    let public = source.connection.public();
    let reader = thread::Builder::new()
        .name(format!("sql-{resource}"))
        .spawn(move || {
            let outcome = match &source.connection {
                Connection::Postgres(url) => postgres_rows::read(
                    url,
                    &source,
                    &reflection,
                    pushdown.as_ref(),
                    &range,
                    &sender,
                ),
                Connection::Sqlite(path) => sqlite_rows::read(
                    path,
                    &source,
                    &reflection,
                    pushdown.as_ref(),
                    &range,
                    &sender,
                ),
            };
            if let Err(message) = outcome {
                // The receiver may be gone (early stop); then nobody needs the error.
                let _ = sender.send(Err(message));
            }
        });
    ChunkIter {
        resource,
        public,
        receiver,
        spawn_error: reader.err().map(|e| e.to_string()),
    }
}

/// Sends one chunk; `false` when the pipeline stopped reading.
fn send_chunk(sender: &mpsc::SyncSender<Chunk>, rows: &mut Vec<Value>) -> bool {
    sender.send(Ok(std::mem::take(rows))).is_ok()
}

/// A row as dlt's default backend yields it: an object keyed by the column names.
fn row_object(names: &[String], values: Vec<Value>) -> Value {
    let mut row = Map::with_capacity(names.len());
    for (name, value) in names.iter().zip(values) {
        row.insert(name.clone(), value);
    }
    Value::Object(row)
}

struct ChunkIter {
    resource: String,
    public: String,
    receiver: mpsc::Receiver<Chunk>,
    spawn_error: Option<String>,
}

impl Iterator for ChunkIter {
    type Item = highwater::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(message) = self.spawn_error.take() {
            return Some(Err(self.fail(format!("cannot start the reader: {message}"))));
        }
        match self.receiver.recv() {
            Ok(Ok(rows)) => Some(Ok(Item::Page(rows))),
            Ok(Err(message)) => Some(Err(self.fail(message))),
            Err(mpsc::RecvError) => None,
        }
    }
}

impl ChunkIter {
    fn fail(&self, message: String) -> Error {
        Error::Resource {
            resource: self.resource.clone(),
            message: format!("{}: {message}", self.public),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pushdown() -> Pushdown {
        Pushdown {
            column: "updated_at".into(),
            min: false,
            start_open: false,
            end_closed: false,
            on_missing: OnCursorMissing::Raise,
            descending: false,
        }
    }

    fn clause(p: &Pushdown, start: Option<Value>, end: Option<Value>) -> (String, Vec<Value>) {
        where_clause(p, &Range { start, end }, "q.\"c\"", |n| format!("${n}"))
    }

    #[test]
    fn range_follows_dlt_operators() {
        let p = pushdown();
        assert_eq!(
            clause(&p, Some(json!(5)), None),
            (
                " WHERE q.\"c\" >= $1 ORDER BY q.\"c\" ASC".into(),
                vec![json!(5)]
            )
        );
        assert_eq!(
            clause(&p, Some(json!(5)), Some(json!(10))).0,
            " WHERE q.\"c\" >= $1 AND q.\"c\" < $2 ORDER BY q.\"c\" ASC"
        );
        let min = Pushdown {
            min: true,
            descending: true,
            ..pushdown()
        };
        assert_eq!(
            clause(&min, Some(json!(5)), Some(json!(1))).0,
            " WHERE q.\"c\" <= $1 AND q.\"c\" > $2 ORDER BY q.\"c\" DESC"
        );
        let open = Pushdown {
            start_open: true,
            end_closed: true,
            ..pushdown()
        };
        assert_eq!(
            clause(&open, Some(json!(5)), Some(json!(10))).0,
            " WHERE q.\"c\" > $1 AND q.\"c\" <= $2 ORDER BY q.\"c\" ASC"
        );
    }

    #[test]
    fn missing_cursor_modes_follow_dlt() {
        let include = Pushdown {
            on_missing: OnCursorMissing::Include,
            ..pushdown()
        };
        assert_eq!(
            clause(&include, Some(json!(5)), None).0,
            " WHERE (q.\"c\" >= $1) OR q.\"c\" IS NULL ORDER BY q.\"c\" ASC"
        );
        assert_eq!(clause(&include, None, None).0, " ORDER BY q.\"c\" ASC");
        let exclude = Pushdown {
            on_missing: OnCursorMissing::Exclude,
            ..pushdown()
        };
        assert_eq!(
            clause(&exclude, None, None).0,
            " WHERE q.\"c\" IS NOT NULL ORDER BY q.\"c\" ASC"
        );
        assert_eq!(
            clause(&exclude, Some(json!(5)), None).0,
            " WHERE (q.\"c\" >= $1) AND q.\"c\" IS NOT NULL ORDER BY q.\"c\" ASC"
        );
    }

    #[test]
    fn connections_parse_and_hide_passwords() {
        let base = Path::new("/p");
        assert_eq!(
            Connection::parse("sqlite:data/a.db", base),
            Ok(Connection::Sqlite(PathBuf::from("/p/data/a.db")))
        );
        assert_eq!(
            Connection::parse("sqlite:///abs/a.db", base),
            Ok(Connection::Sqlite(PathBuf::from("/abs/a.db")))
        );
        let pg = Connection::parse("postgres://u:s3cret@h:5432/db?sslmode=disable", base);
        assert_eq!(
            pg.as_ref().map(Connection::public),
            Ok("postgres://u:***@h:5432/db".to_string())
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        let err = Connection::parse("mysql://u:s3cret@h/db", base).unwrap_err();
        assert!(
            err.contains("unknown connection") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_table("shop.or\"ders"), "\"shop\".\"or\"\"ders\"");
        assert_eq!(
            inner_query(&Selection::Query("SELECT 1;".into())),
            "SELECT 1"
        );
    }
}
