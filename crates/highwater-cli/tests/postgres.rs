//! The PostgreSQL destination through the `highwater` command, against a real server: one
//! cluster per test process (`common::pg`), a new database per test, and a second cluster with
//! TLS for the TLS test. Incremental merges with nested tables and dlt's types, passwords and
//! secrets, an unreachable server, TLS (`require`, `verify-full` with a certificate made here),
//! and two working directories loading into one database. The other commands and state restore
//! (`commands.rs`) and runs killed at every stage (`kills.rs`) run over every destination.

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../highwater/tests/common/mod.rs"]
mod common;
mod support;

use common::pg::{self, PgServer};
use support::{events, events_pipeline, events_pipeline_with, failed, ok, stderr, Project};

/// A database of the test process's server.
struct Db {
    name: String,
}

impl Db {
    fn new() -> Db {
        Db {
            name: pg::server().new_database(),
        }
    }

    /// The destination URL (plain TCP).
    fn url(&self) -> String {
        format!("{}?sslmode=disable", pg::server().url(&self.name))
    }

    /// The URL as errors show it.
    fn public_url(&self) -> String {
        pg::server().url(&self.name)
    }

    fn client(&self) -> postgres::Client {
        pg::server().connect(&self.name)
    }

    fn count(&self, sql: &str) -> i64 {
        count(&mut self.client(), sql)
    }

    fn texts(&self, sql: &str) -> Vec<Vec<String>> {
        texts(&mut self.client(), sql)
    }
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, i64>(0)
}

/// Rows of a query whose columns are all text; NULL as `NULL`.
fn texts(client: &mut postgres::Client, sql: &str) -> Vec<Vec<String>> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Puts `lines` at the top of the cluster's `pg_hba.conf` (the first matching line wins) and
/// reloads the configuration.
fn prepend_hba(server: &PgServer, lines: &str) {
    let path = server.dir().join("data/pg_hba.conf");
    let old = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{lines}\n{old}")).unwrap();
    server
        .connect("postgres")
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
}

/// Waits until `connect` fails (a new `pg_hba.conf` rule is in force); panics after 30 s.
fn wait_until_refused(what: &str, connect: impl Fn() -> Result<postgres::Client, postgres::Error>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while connect().is_ok() {
        assert!(
            Instant::now() < deadline,
            "{what}: still accepted after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. An incremental merge with nested lists, checked table by table and type by type.
// ---------------------------------------------------------------------------------------------

fn shop_pipeline(destination: &str) -> String {
    format!(
        r#"[pipeline]
name = "shop"
destination = "{destination}"
dataset = "shop_data"
working_dir = "work"

[[resources]]
name = "orders"
write_disposition = "merge"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"

[resources.incremental]
cursor_path = "updated_at"
initial_value = "2024-01-01T00:00:00Z"

[resources.columns.updated_at]
data_type = "timestamp"

[resources.columns.meta]
data_type = "json"

[resources.columns.amount]
data_type = "decimal"

# dlt's integer widths: precision 16 is smallint, 32 integer.
[resources.columns.units]
data_type = "bigint"
precision = 16

[resources.columns.visits]
data_type = "bigint"
precision = 32
"#
    )
}

#[test]
fn incremental_merge_with_nested_lists_loads_typed_tables_once() {
    let db = Db::new();
    let p = Project::new(&shop_pipeline(&db.url()));
    p.write_data(
        "a.jsonl",
        &[
            r#"{"id": 1, "customer": "ann", "updated_at": "2024-01-02T10:00:00Z", "units": -7, "visits": 2000000000, "amount": "12.50", "ratio": 0.5, "paid": true, "meta": {"gift": true, "note": "ring twice"}, "tags": ["new", "vip"], "lines": [{"sku": "a-1", "qty": 2, "serials": ["s1", "s2"]}, {"sku": "b-2", "qty": 1, "serials": []}]}"#.to_string(),
            r#"{"id": 2, "customer": "bob", "updated_at": "2024-01-02T11:00:00Z", "amount": 3, "ratio": 1.25, "paid": false, "meta": {"gift": false}, "tags": ["new"], "lines": [{"sku": "c-3", "qty": 5, "serials": ["s3"]}, {"sku": "d-4", "qty": 1, "serials": ["s4", "s5"]}]}"#.to_string(),
            r#"{"id": 3, "customer": "cy", "updated_at": "2024-01-03T09:00:00Z", "amount": "-0.000000001", "ratio": 2.0, "paid": true, "meta": null, "tags": [], "lines": [{"sku": "e-5", "qty": 3, "serials": ["s6"]}]}"#.to_string(),
        ],
    );
    let first = p.run_ok(&[]);
    assert_eq!(first["tables"]["orders"], 3, "{first}");
    assert_eq!(first["tables"]["orders__lines"], 5, "{first}");
    assert_eq!(first["tables"]["orders__lines__serials"], 6, "{first}");
    assert_eq!(first["tables"]["orders__tags"], 3, "{first}");

    // Order 2 changed (fewer lines, new tags), order 4 is new; order 3 sits on the boundary
    // of the cursor and is not loaded again.
    p.write_data(
        "b.jsonl",
        &[
            r#"{"id": 2, "customer": "bob", "updated_at": "2024-01-04T08:00:00Z", "amount": "4.75", "ratio": 1.5, "paid": true, "meta": {"gift": true}, "tags": ["returning"], "lines": [{"sku": "c-3", "qty": 6, "serials": ["s7"]}]}"#.to_string(),
            r#"{"id": 4, "customer": "di", "updated_at": "2024-01-04T09:30:00.250Z", "units": 32767, "visits": -5, "amount": "99.999999999", "ratio": 0.1, "paid": false, "meta": {"note": "first order"}, "tags": ["new"], "lines": [{"sku": "f-6", "qty": 1, "serials": ["s8", "s9"]}]}"#.to_string(),
        ],
    );
    let second = p.run_ok(&[]);
    assert_eq!(second["tables"]["orders"], 2, "{second}");
    assert_eq!(second["load_ids"].as_array().unwrap().len(), 1);

    let third = p.run_ok(&[]);
    assert_eq!(third["load_ids"], serde_json::json!([]), "{third}");
    assert_eq!(third["tables"], serde_json::json!({}), "{third}");

    let s = "shop_data";
    assert_eq!(
        db.texts(&format!(
            "SELECT CAST(id AS text), customer, CAST(amount AS text), CAST(ratio AS text), CAST(paid AS text),
                    meta->>'note', CAST(meta->'gift' AS text),
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS')
             FROM {s}.orders ORDER BY id"
        )),
        [
            ["1", "ann", "12.500000000", "0.5", "true", "ring twice", "true", "2024-01-02T10:00:00.000"],
            ["2", "bob", "4.750000000", "1.5", "true", "NULL", "true", "2024-01-04T08:00:00.000"],
            ["3", "cy", "-0.000000001", "2", "true", "NULL", "NULL", "2024-01-03T09:00:00.000"],
            ["4", "di", "99.999999999", "0.1", "false", "first order", "NULL", "2024-01-04T09:30:00.250"],
        ],
        "order 2 replaced by its new version"
    );
    // The children of the replaced order went with it; each child row links to its parent and
    // (through `_dlt_root_id`) to its root.
    assert_eq!(
        db.texts(&format!(
            "SELECT CAST(o.id AS text), l.sku, CAST(l.qty AS text), CAST(l._dlt_list_idx AS text),
                    coalesce(string_agg(s.value, ',' ORDER BY s._dlt_list_idx), '')
             FROM {s}.orders o
             JOIN {s}.orders__lines l ON l._dlt_parent_id = o._dlt_id AND l._dlt_root_id = o._dlt_id
             LEFT JOIN {s}.orders__lines__serials s ON s._dlt_parent_id = l._dlt_id AND s._dlt_root_id = o._dlt_id
             GROUP BY o.id, l.sku, l.qty, l._dlt_list_idx ORDER BY o.id, l._dlt_list_idx"
        )),
        [
            ["1", "a-1", "2", "0", "s1,s2"],
            ["1", "b-2", "1", "1", ""],
            ["2", "c-3", "6", "0", "s7"],
            ["3", "e-5", "3", "0", "s6"],
            ["4", "f-6", "1", "0", "s8,s9"],
        ]
    );
    assert_eq!(
        db.texts(&format!(
            "SELECT CAST(o.id AS text), t.value FROM {s}.orders__tags t
             JOIN {s}.orders o ON t._dlt_parent_id = o._dlt_id AND t._dlt_root_id = o._dlt_id
             ORDER BY o.id, t._dlt_list_idx"
        )),
        [["1", "new"], ["1", "vip"], ["2", "returning"], ["4", "new"]]
    );
    for (table, rows) in [
        ("orders__lines", 5),
        ("orders__lines__serials", 6),
        ("orders__tags", 4),
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {s}.{table}")),
            rows,
            "{table}: no rows left behind by the replaced order"
        );
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM {s}.{table} c WHERE NOT EXISTS (SELECT 1 FROM {s}.orders o WHERE o._dlt_id = c._dlt_root_id)"
            )),
            0,
            "{table}: every row has its root"
        );
    }

    // dlt's system tables: one load per run that loaded, one state row per state change.
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}._dlt_loads")), 2);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM {s}._dlt_loads WHERE status = 0 AND schema_name = 'shop'"
        )),
        2
    );
    assert_eq!(
        db.texts(&format!(
            "SELECT CAST(version AS text), pipeline_name FROM {s}._dlt_pipeline_state ORDER BY version"
        )),
        [["1", "shop"], ["2", "shop"]]
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM {s}._dlt_pipeline_state s JOIN {s}._dlt_loads l ON l.load_id = s._dlt_load_id"
        )),
        2,
        "each state row belongs to a committed load"
    );
    assert!(db.count(&format!("SELECT count(*) FROM {s}._dlt_version")) >= 1);

    // Column types as dlt's postgres destination maps them.
    let columns = |table: &str| -> Vec<Vec<String>> {
        db.texts(&format!(
            "SELECT CAST(column_name AS text), CAST(data_type AS text),
                    coalesce(CAST(numeric_precision AS text), '') || ',' || coalesce(CAST(numeric_scale AS text), ''),
                    CAST(is_nullable AS text)
             FROM information_schema.columns WHERE table_schema = '{s}' AND table_name = '{table}'
             ORDER BY column_name"
        ))
    };
    let orders = columns("orders");
    let ty = |name: &str| -> (String, String, String) {
        let row = orders
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no column {name} in {orders:?}"));
        (row[1].clone(), row[2].clone(), row[3].clone())
    };
    assert_eq!(ty("id").0, "bigint");
    assert_eq!(ty("id").2, "NO", "the primary key is NOT NULL");
    assert_eq!(ty("customer").0, "character varying");
    assert_eq!(ty("updated_at").0, "timestamp with time zone");
    assert_eq!(ty("meta").0, "jsonb");
    assert_eq!(
        (ty("amount").0, ty("amount").1),
        ("numeric".to_string(), "38,9".to_string())
    );
    assert_eq!(ty("ratio").0, "double precision");
    assert_eq!(ty("paid").0, "boolean");
    assert_eq!(ty("units").0, "smallint");
    assert_eq!(ty("visits").0, "integer");
    assert_eq!(
        db.texts(&format!(
            "SELECT CAST(id AS text), CAST(units AS text), CAST(visits AS text) FROM {s}.orders WHERE units IS NOT NULL OR visits IS NOT NULL ORDER BY id"
        )),
        [["1", "-7", "2000000000"], ["4", "32767", "-5"]]
    );
    assert_eq!(ty("_dlt_id").0, "character varying");
    assert_eq!(ty("_dlt_load_id").0, "character varying");
    assert!(
        !orders.iter().any(|r| r[0].starts_with("meta__")),
        "a json column is not flattened: {orders:?}"
    );
    let lines = columns("orders__lines");
    for (name, data_type) in [
        ("qty", "bigint"),
        ("sku", "character varying"),
        ("_dlt_list_idx", "bigint"),
        ("_dlt_parent_id", "character varying"),
        ("_dlt_root_id", "character varying"),
    ] {
        assert!(
            lines.iter().any(|r| r[0] == name && r[1] == data_type),
            "orders__lines.{name} {data_type}: {lines:?}"
        );
    }
    let loads = columns("_dlt_loads");
    assert!(
        loads
            .iter()
            .any(|r| r[0] == "inserted_at" && r[1] == "timestamp with time zone"),
        "{loads:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Passwords: a secret inside the URL, PGPASSWORD, and a wrong password.
// ---------------------------------------------------------------------------------------------

/// The password of the role the test creates: `/`, `?` and `:` in it, as generated passwords
/// have; written into the URL as it is.
const SECRET: &str = "s3cr/et?pw:Xq9";
const WRONG: &str = "wr0ng/guess?pw";

#[test]
fn passwords_from_secrets_or_pgpassword_are_never_shown() {
    let server = pg::server();
    let db = Db::new();
    // A role that must give its password (SCRAM) over TCP; the other roles keep `trust`.
    let role = "loader";
    db.client()
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {role} LOGIN PASSWORD '{SECRET}';
             ALTER DATABASE {db} OWNER TO {role};",
            db = db.name
        ))
        .unwrap();
    prepend_hba(
        server,
        &format!("host all {role} 127.0.0.1/32 scram-sha-256"),
    );
    let without_password = format!("postgres://{role}@127.0.0.1:{}/{}", server.port, db.name);
    wait_until_refused("a password-less login", || {
        postgres::Client::connect(&without_password, postgres::NoTls)
    });

    let p = Project::new(&events_pipeline(&format!(
        "postgres://{role}:{{secrets.pg_password}}@127.0.0.1:{}/{}?sslmode=disable",
        server.port, db.name
    )));
    let shown = format!(
        "postgres://{role}:***@127.0.0.1:{}/{}",
        server.port, db.name
    );
    p.write_data("a.jsonl", &events(1..=3, "a"));

    // The secret from the environment, every dependency logging at trace level.
    let out = p.run(
        &["--json"],
        &[("PG_PASSWORD", SECRET), ("RUST_LOG", "trace")],
    );
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_eq!(ok(&out)["tables"]["events"], 3);
    assert!(text.contains("DEBUG"), "logs were on: {text}");
    assert!(
        !text.contains("TRACE"),
        "other libraries log info at most, whatever RUST_LOG says: {text}"
    );
    assert!(!text.contains(SECRET) && !text.contains("s3cr"), "{text}");
    let state = p.state_file("work").unwrap();

    // A wrong password: the run fails naming the destination, nothing is loaded, the state
    // stays, and neither password shows at any log level.
    p.write_data("b.jsonl", &events(4..=5, "b"));
    let out = p.run(
        &["--json"],
        &[("PG_PASSWORD", WRONG), ("RUST_LOG", "trace")],
    );
    let err = failed(&out);
    let text = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(&format!("destination {shown}")), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    for secret in [SECRET, WRONG, "s3cr", "wr0ng"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    assert_eq!(db.count("SELECT count(*) FROM raw.events"), 3);
    assert_eq!(p.state_file("work").unwrap(), state, "state unchanged");

    // No password in the URL: PGPASSWORD's, as libpq does.
    p.write(
        "pipeline.toml",
        &events_pipeline(&format!("{without_password}?sslmode=disable")),
    );
    let out = p.run(&["--json"], &[("PGPASSWORD", WRONG), ("RUST_LOG", "debug")]);
    let err = failed(&out);
    assert!(
        err.contains(&format!("destination {without_password}")),
        "{err}"
    );
    assert!(!err.contains(WRONG) && !err.contains(SECRET), "{err}");
    assert_eq!(db.count("SELECT count(*) FROM raw.events"), 3);
    assert_eq!(p.state_file("work").unwrap(), state, "state unchanged");

    // The right one: the package the failed runs left is loaded, once.
    let out = p.run(&["--json"], &[("PGPASSWORD", SECRET)]);
    assert_eq!(ok(&out)["tables"]["events"], 2, "{}", stderr(&out));
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text) FROM raw.events"),
        [["5", "5"]]
    );
    assert_eq!(
        p.run_ok(&[("PGPASSWORD", SECRET)])["load_ids"],
        serde_json::json!([])
    );
}

// ---------------------------------------------------------------------------------------------
// 3. An unreachable server.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unreachable_server_is_a_named_error_and_loses_nothing() {
    let db = Db::new();
    let port = closed_port();
    let down = format!("postgres://postgres@127.0.0.1:{port}/{}", db.name);

    // A new working dir: the run stops before extracting, naming the destination.
    let p = Project::new(&events_pipeline(&format!("{down}?sslmode=disable")));
    p.write_data("a.jsonl", &events(1..=3, "a"));
    let started = Instant::now();
    let err = failed(&p.run(&[], &[]));
    assert!(err.contains(&format!("destination {down}")), "{err}");
    assert!(err.contains("connecting"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    assert!(p.state_file("work").is_none());

    // The server is up: the data loads.
    p.write("pipeline.toml", &events_pipeline(&db.url()));
    assert_eq!(p.run_ok(&[])["tables"]["events"], 3);
    let state = p.state_file("work").unwrap();

    // Down again after extracting: the package waits, the state does not advance.
    p.write(
        "pipeline.toml",
        &events_pipeline(&format!("{down}?sslmode=disable")),
    );
    p.write_data("b.jsonl", &events(4..=6, "b"));
    let err = failed(&p.run(&[], &[]));
    assert!(err.contains(&format!("destination {down}")), "{err}");
    assert_eq!(p.state_file("work").unwrap(), state);
    assert_eq!(db.count("SELECT count(*) FROM raw.events"), 3);

    // Up again: `info` shows the waiting package; the next run loads it, once.
    p.write("pipeline.toml", &events_pipeline(&db.url()));
    let info = ok(&p
        .command(&["info", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(
        info["pending_packages"].as_array().unwrap().len(),
        1,
        "{info}"
    );
    let out = p.run_ok(&[]);
    assert_eq!(out["tables"]["events"], 3, "{out}");
    assert_eq!(out["load_ids"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text), CAST(max(id) AS text) FROM raw.events"),
        [["6", "6", "6"]]
    );
    assert_eq!(db.count("SELECT count(*) FROM raw._dlt_loads"), 2);
    assert_eq!(p.run_ok(&[])["load_ids"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------------
// 4. TLS.
// ---------------------------------------------------------------------------------------------

/// PEM texts of a test CA, a server certificate it signed (SAN IP 127.0.0.1 and DNS
/// localhost) with its key, and an unrelated CA.
struct Certs {
    ca: String,
    server_cert: String,
    server_key: String,
    other_ca: String,
}

fn make_certs() -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("highwater test CA");
    let (other_ca, _) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Certs {
        ca: ca_pem,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        other_ca,
    }
}

/// A TLS client of `url` through the destination's own TLS code (`sslmode=require`).
fn tls_client(url: &str) -> postgres::Client {
    use highwater::destination::postgres::tls::{self, SslMode};
    let config: postgres::Config = url.parse().unwrap();
    tls::connect(config, SslMode::Require, None).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn tls_require_and_verify_full_against_a_server_with_a_test_certificate() {
    let certs = make_certs();
    // The server's certificate and key, readable by the cluster's owner only.
    let files = tempfile::tempdir().unwrap();
    let cert_path = files.path().join("server.crt");
    let key_path = files.path().join("server.key");
    std::fs::write(&cert_path, &certs.server_cert).unwrap();
    std::fs::write(&key_path, &certs.server_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&cert_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let shared = pg::server();
    shared.give(&key_path);
    shared.give(&cert_path);
    let server = PgServer::start(&[
        ("ssl", "on"),
        ("ssl_cert_file", cert_path.to_str().unwrap()),
        ("ssl_key_file", key_path.to_str().unwrap()),
    ]);
    let db = server.new_database();
    // The test's database takes TLS connections only: whatever connects to it below and
    // works, works over TLS.
    prepend_hba(&server, &format!("hostnossl {db} all 0.0.0.0/0 reject"));
    let url = |host: &str| format!("postgres://postgres@{host}:{}/{db}", server.port);
    wait_until_refused("a plain connection", || {
        postgres::Client::connect(&url("127.0.0.1"), postgres::NoTls)
    });
    let plain = postgres::Client::connect(&url("127.0.0.1"), postgres::NoTls)
        .err()
        .and_then(|e| e.as_db_error().map(|db| db.message().to_string()))
        .unwrap_or_default();
    assert!(plain.contains("no encryption"), "{plain}");
    let mut admin = tls_client(&url("127.0.0.1"));
    let ssl = texts(
        &mut admin,
        "SELECT CAST(ssl AS text), version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(ssl[0][0], "true", "the server sees TLS: {ssl:?}");
    assert!(ssl[0][1].starts_with("TLSv1."), "{ssl:?}");

    let p = Project::new("");
    p.write("ca.pem", &certs.ca);
    p.write("other-ca.pem", &certs.other_ca);
    p.write_data("a.jsonl", &events(1..=3, "a"));
    // One pipeline file per way of connecting, each with its own dataset and working dir.
    let with_url = |file: &str, dataset: &str, destination: &str| {
        p.write(
            file,
            &events_pipeline_with(
                &format!(
                    "destination = \"{destination}\"\ndataset = \"{dataset}\"\nworking_dir = \"work_{dataset}\""
                ),
                "",
            ),
        );
    };
    let with_table = |file: &str, dataset: &str, table: &str| {
        p.write(
            file,
            &events_pipeline_with(
                &format!("dataset = \"{dataset}\"\nworking_dir = \"work_{dataset}\""),
                &format!("\n[destination]\nkind = \"postgres\"\n{table}"),
            ),
        );
    };
    let loaded = |out: &Output, dataset: &str| {
        assert_eq!(ok(out)["tables"]["events"], 3, "{dataset}");
        assert_eq!(
            count(
                &mut tls_client(&url("127.0.0.1")),
                &format!("SELECT count(*) FROM {dataset}.events")
            ),
            3
        );
    };

    // require: encrypted, the certificate not checked.
    with_url(
        "require.toml",
        "req",
        &format!("{}?sslmode=require", url("127.0.0.1")),
    );
    loaded(&p.run_file("require.toml", &["--json"], &[]), "req");

    // verify-full against the test CA, as a [destination] table (sslrootcert relative to the
    // pipeline file), to 127.0.0.1 (the certificate's IP address).
    with_table(
        "full.toml",
        "verified",
        &format!(
            "credentials = \"{}\"\nsslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"\n",
            url("127.0.0.1")
        ),
    );
    loaded(&p.run_file("full.toml", &["--json"], &[]), "verified");
    // ... and to localhost (the certificate's DNS name), in the URL's own query.
    with_url(
        "localhost.toml",
        "verified",
        &format!(
            "{}?sslmode=verify-full&sslrootcert=ca.pem",
            url("localhost")
        ),
    );
    let info = ok(&p
        .command(&["info", "localhost.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["tables"]["events"], 3, "{info}");
    assert_eq!(info["destination"], url("localhost"));

    // prefer (libpq's default, no sslmode): TLS when the server offers it.
    with_url("prefer.toml", "req", &url("127.0.0.1"));
    let info = ok(&p
        .command(&["info", "prefer.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["tables"]["events"], 3, "{info}");

    // A host name the certificate lacks (the address is still 127.0.0.1).
    let elsewhere = format!(
        "postgres://postgres@db.elsewhere.test:{}/{db}?hostaddr=127.0.0.1&sslrootcert=ca.pem",
        server.port
    );
    let shown_elsewhere = format!(
        "destination postgres://postgres@db.elsewhere.test:{}/{db}",
        server.port
    );
    let shown_here = format!("destination {}", url("127.0.0.1"));
    // Refused connections: (file, dataset, destination, what the error says).
    let refused = [
        // A root that did not sign the server's certificate.
        (
            "other-root.toml",
            "other_root",
            format!(
                "{}?sslmode=verify-full&sslrootcert=other-ca.pem",
                url("127.0.0.1")
            ),
            vec![shown_here.as_str(), "certificate", "UnknownIssuer"],
        ),
        // The system roots (no sslrootcert) do not know the test CA either.
        (
            "system-roots.toml",
            "other_root",
            format!("{}?sslmode=verify-full", url("127.0.0.1")),
            vec!["UnknownIssuer"],
        ),
        // verify-full checks the host name.
        (
            "mismatch.toml",
            "mismatch",
            format!("{elsewhere}&sslmode=verify-full"),
            vec![shown_elsewhere.as_str(), "not valid for name"],
        ),
        // Plain TCP is refused by this database: the runs above really went over TLS.
        (
            "disable.toml",
            "plain",
            format!("{}?sslmode=disable", url("127.0.0.1")),
            vec!["no encryption"],
        ),
    ];
    for (file, dataset, destination, says) in &refused {
        with_url(file, dataset, destination);
        let err = failed(&p.run_file(file, &[], &[]));
        for words in says {
            assert!(err.contains(words), "{file}: {words:?} in {err}");
        }
    }
    // verify-ca (the chain only) connects to the name the certificate lacks.
    with_url(
        "chain-only.toml",
        "verified",
        &format!("{elsewhere}&sslmode=verify-ca"),
    );
    let info = ok(&p
        .command(&["info", "chain-only.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["tables"]["events"], 3, "{info}");

    let mut admin = tls_client(&url("127.0.0.1"));
    for dataset in ["other_root", "mismatch", "plain"] {
        assert_eq!(
            count(
                &mut admin,
                &format!(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{dataset}'"
                )
            ),
            0,
            "{dataset}: nothing created by a refused connection"
        );
    }
    assert_eq!(count(&mut admin, "SELECT count(*) FROM req._dlt_loads"), 1);
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM verified._dlt_loads"),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Two working directories, one database.
// ---------------------------------------------------------------------------------------------

/// A session of its own that takes and gives back the lock loads into a dataset take turns on.
struct DatasetLock {
    client: postgres::Client,
    key: i64,
}

impl DatasetLock {
    /// Takes the lock of `dataset`.
    fn hold(db: &Db, dataset: &str) -> DatasetLock {
        let mut client = db.client();
        let key = dataset_lock_key(&mut client, dataset);
        let mut lock = DatasetLock { client, key };
        lock.lock();
        lock
    }

    fn lock(&mut self) {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&self.key])
            .unwrap();
    }

    fn unlock(&mut self) {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .unwrap();
    }
}

/// The key of the advisory lock loads into `dataset` take turns on (as
/// `destination::postgres::take_dataset_lock` derives it: the first 8 bytes of a SHA-256).
fn dataset_lock_key(client: &mut postgres::Client, dataset: &str) -> i64 {
    client
        .query_one(
            "SELECT CAST(CAST(('x' || encode(substring(sha256(convert_to('highwater dataset ' || $1, 'UTF8')) FROM 1 FOR 8), 'hex')) AS bit(64)) AS bigint)",
            &[&dataset],
        )
        .unwrap()
        .get(0)
}

/// Waits until `n` other sessions of the database wait for the dataset's load lock.
fn wait_for_waiting_loads(db: &Db, n: i64, children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = db.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%pg_try_advisory_xact_lock%'",
        );
        if waiting >= n {
            return;
        }
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut err);
                }
                panic!("a run ended before it waited for the load lock ({status}): {err}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} of {n} runs waited for the load lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_run(p: &Project, file: &str, args: &[&str]) -> Child {
    p.command(&["run", file, "--progress", "none", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two stateless backfills of adjacent intervals, each from its own working directory, loading
/// at the same time: both commit, every row once, no state written.
#[test]
fn parallel_backfills_from_two_working_dirs_load_every_row_once() {
    let db = Db::new();
    let backfill = |work: &str| {
        format!(
            r#"[pipeline]
name = "backfill"
destination = "{}"
dataset = "raw"
working_dir = "{work}"

[[resources]]
name = "events"
write_disposition = "append"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"

[resources.incremental]
cursor_path = "at"
initial_value = "2024-01-01T00:00:00Z"
allow_external_schedulers = true

[resources.columns.at]
data_type = "timestamp"
"#,
            db.url()
        )
    };
    let p = Project::new(&backfill("work1"));
    p.write("w2.toml", &backfill("work2"));
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
    // Four days, one event a minute.
    let lines: Vec<String> = (0..5760)
        .map(|i| {
            let at = (start + chrono::TimeDelta::minutes(i))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            format!(r#"{{"id": {i}, "at": "{at}", "tags": ["t{i}"]}}"#)
        })
        .collect();
    p.write_data("a.jsonl", &lines);

    // Hold the dataset's load lock until both runs wait for it, so their loads overlap.
    let mut holder = DatasetLock::hold(&db, "raw");
    let mut children = vec![
        spawn_run(
            &p,
            "pipeline.toml",
            &[
                "--interval-start",
                "2024-01-01T00:00:00Z",
                "--interval-end",
                "2024-01-03T00:00:00Z",
            ],
        ),
        spawn_run(
            &p,
            "w2.toml",
            &[
                "--interval-start",
                "2024-01-03T00:00:00Z",
                "--interval-end",
                "2024-01-05T00:00:00Z",
            ],
        ),
    ];
    wait_for_waiting_loads(&db, 2, &mut children);
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = '_dlt_loads'"),
        0,
        "nothing committed while the lock is held"
    );
    holder.unlock();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let json = ok(&out);
        assert_eq!(json["tables"]["events"], 2880, "{json}");
    }
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text), CAST(min(id) AS text), CAST(max(id) AS text) FROM raw.events"),
        [["5760", "5760", "0", "5759"]]
    );
    assert_eq!(db.count("SELECT count(*) FROM raw.events__tags"), 5760);
    assert_eq!(db.count("SELECT count(*) FROM raw._dlt_loads"), 2);
    assert_eq!(
        db.count("SELECT count(*) FROM raw._dlt_pipeline_state"),
        0,
        "backfills write no state"
    );
    assert!(p.state_file("work1").is_none() && p.state_file("work2").is_none());
}

/// Two state-writing runs of one pipeline from two working directories, loading at the same
/// time: the one that commits second is refused (it would overwrite the other's state), and
/// its next run loads only what is missing.
#[test]
fn concurrent_state_writing_runs_from_two_working_dirs_conflict_instead_of_losing_updates() {
    let db = Db::new();
    let pipeline = |work: &str| {
        events_pipeline(&db.url())
            .replace(
                "working_dir = \"work\"",
                &format!("working_dir = \"{work}\""),
            )
            // append: a row loaded twice would show.
            .replace(
                "write_disposition = \"merge\"",
                "write_disposition = \"append\"",
            )
    };
    let p = Project::new(&pipeline("work_a"));
    p.write("b.toml", &pipeline("work_b"));
    p.write_data("a.jsonl", &events(1..=50, "a"));

    let mut holder = DatasetLock::hold(&db, "raw");
    let mut children = vec![
        spawn_run(&p, "pipeline.toml", &[]),
        spawn_run(&p, "b.toml", &[]),
    ];
    wait_for_waiting_loads(&db, 2, &mut children);
    holder.unlock();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one run commits: {} / {}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    let (winner, loser) = (winners[0], 1 - winners[0]);
    assert_eq!(ok(&outs[winner])["tables"]["events"], 50);
    let err = failed(&outs[loser]);
    assert!(err.contains("committed in between"), "{err}");
    assert!(err.contains(&db.public_url()), "{err}");
    assert_eq!(
        db.count("SELECT count(*) FROM raw.events"),
        50,
        "nothing twice"
    );
    assert_eq!(db.count("SELECT count(*) FROM raw._dlt_pipeline_state"), 1);

    // The refused working dir takes the committed state and loads only what is missing.
    let files = ["pipeline.toml", "b.toml"];
    p.write_data("b.jsonl", &events(51..=80, "b"));
    let out = ok(&p.run_file(files[loser], &["--json"], &[]));
    assert_eq!(out["tables"]["events"], 30, "{out}");
    assert_eq!(
        out["state"]["events"]["resources"]["events"]["incremental"]["ts"]["last_value"], 80,
        "{out}"
    );
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text) FROM raw.events"),
        [["80", "80"]]
    );

    // The other working dir is now the one behind: it never loads a row twice either (it is
    // refused once, then takes the newer state), and ends with nothing to load.
    let first = p.run_file(files[winner], &["--json"], &[]);
    if !first.status.success() {
        assert!(failed(&first).contains("committed in between"));
    } else {
        assert_eq!(ok(&first)["tables"], serde_json::json!({}));
    }
    let then = ok(&p.run_file(files[winner], &["--json"], &[]));
    assert_eq!(then["load_ids"], serde_json::json!([]), "{then}");
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text) FROM raw.events"),
        [["80", "80"]]
    );

    // A load that cannot get the lock in time gives up naming the destination; its package
    // waits for the next run.
    p.write_data("c.jsonl", &events(81..=90, "c"));
    holder.lock();
    let err = failed(&p.run_file(files[winner], &[], &[("HIGHWATER_LOCK_TIMEOUT", "1")]));
    assert!(
        err.contains(&format!("destination {}", db.public_url())) && err.contains("busy"),
        "{err}"
    );
    holder.unlock();
    assert_eq!(db.count("SELECT count(*) FROM raw.events"), 80);
    let out = ok(&p.run_file(files[winner], &["--json"], &[]));
    assert_eq!(out["tables"]["events"], 10, "{out}");
    assert_eq!(
        db.texts("SELECT CAST(count(*) AS text), CAST(count(DISTINCT id) AS text) FROM raw.events"),
        [["90", "90"]]
    );
}
