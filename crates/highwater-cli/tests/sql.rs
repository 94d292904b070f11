//! The `sql` source against a real PostgreSQL server (Debian's `postgresql` package, a fresh
//! cluster started by each test) and real SQLite files, through the `highwater` command.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

#[path = "../../highwater/tests/common/mod.rs"]
mod common;
mod support;

use common::pg;
use support::{highwater, ok, stderr, CRASH_POINTS};

/// A pipeline folder with one `sql` resource.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(resource: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[pipeline]\nname = \"shop\"\ndestination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"\n\n{resource}"
        );
        std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = highwater();
        cmd.current_dir(self.path())
            .args(["run", "pipeline.toml", "--json", "--progress", "log"])
            .args(args)
            .env("RUST_LOG", "highwater=debug");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn db(&self) -> duckdb::Connection {
        duckdb::Connection::open(self.path().join("out.duckdb")).unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = self.db();
        let text = format!("SELECT CAST(COLUMNS(*) AS VARCHAR) FROM ({sql})");
        let mut stmt = conn.prepare(&text).unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            let n = row.as_ref().column_count();
            out.push(
                (0..n)
                    .map(|i| {
                        row.get::<_, Option<String>>(i)
                            .unwrap()
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect(),
            );
        }
        out
    }

    /// Column name → DuckDB type and nullability of a table in the dataset.
    fn columns(&self, table: &str) -> Vec<(String, String, String)> {
        self.rows(&format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_schema = 'raw' AND table_name = '{table}' ORDER BY ordinal_position"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect()
    }
}

const ORDERS: &str = "
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer varchar(40) NOT NULL,
    qty smallint,
    amount numeric(10,2),
    ratio double precision,
    paid boolean,
    updated_at timestamptz NOT NULL,
    placed_local timestamp,
    ship_date date,
    ship_time time,
    meta jsonb,
    tags text[],
    receipt bytea,
    ref uuid,
    wait interval
);
INSERT INTO orders VALUES
 (1, 'ann', 2, 10.50, 0.5, true, '2024-01-01 10:00:00+00', '2024-01-01 12:00:00', '2024-01-03', '08:30:00',
  '{\"gift\": true, \"lines\": [1, 2]}', '{a,b}', '\\x0102', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day'),
 (2, 'bob', NULL, -3.25, NULL, false, '2024-01-01 11:00:00+02', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 'cy', 7, 1234.00, 2.25, NULL, '2024-01-02 00:00:00+00', '2024-01-02 00:00:01.5', NULL, NULL, '[1]', '{}', NULL, NULL, NULL),
 (4, 'di', 1, 0.01, 1e-3, true, '2024-01-02 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, 'ed', 9, 99.99, 3.0, true, '2024-01-03 09:15:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
";

fn orders_project(url: &str, extra: &str) -> Project {
    Project::new(&format!(
        "[[resources]]\nname = \"orders\"\n{extra}\n[resources.source]\nkind = \"sql\"\nconnection = \"{url}\"\ntable = \"orders\"\nchunk_size = 2\n\n[resources.incremental]\ncursor_path = \"updated_at\"\ninitial_value = \"2024-01-01T00:00:00Z\"\n"
    ))
}

#[test]
fn postgres_table_loads_with_its_types_and_incrementally() {
    let server = pg::server();
    let (shop, mut pg) = server.database(ORDERS);
    let p = orders_project(&server.url(&shop), "");

    let first = p.run(&[], &[]);
    assert_eq!(ok(&first)["tables"]["orders"], 5, "{}", stderr(&first));
    // The range went into the query as a parameter, and rows came in chunks of 2.
    let log = stderr(&first);
    assert!(
        log.contains("WHERE q.\"updated_at\" >= $1 ORDER BY q.\"updated_at\" ASC"),
        "{log}"
    );

    let columns = p.columns("orders");
    let ty = |name: &str| {
        columns
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
            .clone()
    };
    assert_eq!(ty("id").1, "BIGINT");
    assert_eq!(ty("id").2, "NO", "the primary key is NOT NULL");
    assert_eq!(
        ty("customer"),
        ("customer".into(), "VARCHAR".into(), "NO".into())
    );
    assert_eq!(ty("qty").1, "BIGINT");
    assert_eq!(ty("amount").1, "DECIMAL(10,2)");
    assert_eq!(ty("ratio").1, "DOUBLE");
    assert_eq!(ty("paid").1, "BOOLEAN");
    assert_eq!(ty("updated_at").1, "TIMESTAMP WITH TIME ZONE");
    assert_eq!(
        ty("placed_local").1,
        "TIMESTAMP",
        "naive stays naive, as dlt"
    );
    assert_eq!(ty("ship_date").1, "DATE");
    assert_eq!(ty("ship_time").1, "TIME");
    assert_eq!(ty("meta").1, "JSON");
    assert_eq!(ty("tags").1, "JSON");
    assert_eq!(ty("receipt").1, "BLOB");
    assert_eq!(ty("ref").1, "VARCHAR");
    assert_eq!(ty("wait").1, "VARCHAR", "no dlt type: read as text");
    assert!(columns.iter().any(|c| c.0 == "_dlt_id"));
    assert!(columns.iter().any(|c| c.0 == "_dlt_load_id"));

    let rows = p.rows(
        "SELECT id, customer, qty, amount, epoch_ms(updated_at), placed_local, ship_date, ship_time, \
         meta, tags, hex(receipt), ref, wait FROM raw.orders ORDER BY id",
    );
    assert_eq!(
        rows[0],
        [
            "1",
            "ann",
            "2",
            "10.50",
            "1704103200000",
            "2024-01-01 12:00:00",
            "2024-01-03",
            "08:30:00",
            "{\"gift\":true,\"lines\":[1,2]}",
            "[\"a\",\"b\"]",
            "0102",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "1 day"
        ]
    );
    assert_eq!(rows[1][3], "-3.25");
    assert_eq!(rows[1][4], "1704099600000", "+02 offset converted to UTC");
    assert_eq!(rows[2][5], "2024-01-02 00:00:01.5");
    assert_eq!(rows[2][9], "[]");

    // New and changed rows: the boundary row (id 5) is not loaded twice.
    pg.batch_execute(
        "INSERT INTO orders (id, customer, updated_at) VALUES (6, 'fay', '2024-01-04 00:00:00+00');
         UPDATE orders SET updated_at = '2024-01-05 00:00:00+00', qty = 10 WHERE id = 2;
         INSERT INTO orders (id, customer, updated_at) VALUES (7, 'gus', '2024-01-01 05:00:00+00');",
    )
    .unwrap();
    let second = ok(&p.run(&[], &[]));
    assert_eq!(
        second["tables"]["orders"], 2,
        "ids 6 and 2; 7 is before the start"
    );
    assert_eq!(
        p.rows("SELECT count(*) FROM raw.orders")[0][0],
        "7",
        "append keeps the old version of 2"
    );
    let state = &second["state"]["shop"]["resources"]["orders"]["incremental"]["updated_at"];
    assert_eq!(
        state["last_value"], "2024-01-05T00:00:00+00:00",
        "stored as the row held it, as dlt stores a cursor"
    );

    // Nothing new: nothing loaded.
    let third = ok(&p.run(&[], &[]));
    assert!(third["tables"].as_object().unwrap().is_empty(), "{third}");
}

#[test]
fn postgres_merge_uses_the_tables_primary_key_and_queries_take_a_range() {
    let server = pg::server();
    let (shop, mut pg) = server.database(ORDERS);
    let p = orders_project(&server.url(&shop), "write_disposition = \"merge\"\n");
    ok(&p.run(&[], &[]));
    pg.batch_execute(
        "UPDATE orders SET qty = 42, updated_at = '2024-02-01 00:00:00+00' WHERE id = 1",
    )
    .unwrap();
    ok(&p.run(&[], &[]));
    assert_eq!(
        p.rows("SELECT count(*), sum(qty) FROM raw.orders"),
        [["5", "59"]],
        "id 1 replaced by its new version through the reflected primary key"
    );

    // A query with an explicit interval: only rows inside [start, end) load.
    let q = Project::new(&format!(
        "[[resources]]\nname = \"big_orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"{}\"\nquery = \"SELECT id, amount, updated_at FROM orders WHERE amount > 1\"\n\n[resources.incremental]\ncursor_path = \"updated_at\"\ninitial_value = \"2024-01-01T00:00:00Z\"\nallow_external_schedulers = true\n",
        server.url(&shop)
    ));
    let out = q.run(
        &[
            "--interval-start",
            "2024-01-02T00:00:00Z",
            "--interval-end",
            "2024-01-03T00:00:00Z",
        ],
        &[],
    );
    let log = stderr(&out);
    assert_eq!(ok(&out)["tables"]["big_orders"], 1, "{log}");
    assert!(log.contains("AND q.\"updated_at\" < $2"), "{log}");
    assert_eq!(q.rows("SELECT id FROM raw.big_orders"), [["3"]]);
}

#[test]
fn postgres_errors_name_the_connection_but_never_the_password() {
    let server = pg::server();
    let (shop, _client) = server.database(ORDERS);
    let secret = "pa55-w0rd-xyz";
    // Nothing listens on port 1.
    let p = Project::new(
        "[[resources]]\nname = \"orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"postgres://postgres:{secrets.pg_password}@127.0.0.1:1/shop\"\ntable = \"orders\"\n",
    );
    let out = p.run(&[], &[("PG_PASSWORD", secret)]);
    assert_eq!(out.status.code(), Some(1));
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        text.contains("postgres://postgres:***@127.0.0.1:1/shop"),
        "{text}"
    );
    assert!(!text.contains(secret), "{text}");

    // The same secret in a working connection, every dependency logging at trace level.
    let working = Project::new(&format!(
        "[[resources]]\nname = \"orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"postgres://postgres:{{secrets.pg_password}}@127.0.0.1:{}/{shop}\"\ntable = \"orders\"\n",
        server.port
    ));
    let out = working.run(&[], &[("PG_PASSWORD", secret), ("RUST_LOG", "trace")]);
    assert_eq!(ok(&out)["tables"]["orders"], 5);
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "logs were on: {text}"
    );
    assert!(!text.contains(secret), "{text}");

    // A missing table: the server's message, and nothing created.
    let missing = Project::new(&format!(
        "[[resources]]\nname = \"orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"{}\"\ntable = \"no_such_table\"\n",
        server.url(&shop)
    ));
    let out = missing.run(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("relation \"no_such_table\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.path().join("out.duckdb").exists());

    // table and query together: a configuration error naming the file and line.
    let both = Project::new(&format!(
        "[[resources]]\nname = \"orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"{}\"\ntable = \"orders\"\nquery = \"SELECT 1\"\n",
        server.url(&shop)
    ));
    let out = both.run(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("pipeline.toml:11: resource orders: sql needs exactly one of table or query"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sqlite_file_loads_with_declared_types_and_numeric_cursor_pushdown() {
    let p = Project::new(
        "[[resources]]\nname = \"readings\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"sqlite:data/sensors.db\"\ntable = \"readings\"\nchunk_size = 3\n\n[resources.incremental]\ncursor_path = \"seq\"\ninitial_value = 2\n",
    );
    std::fs::create_dir(p.path().join("data")).unwrap();
    let db = rusqlite::Connection::open(p.path().join("data/sensors.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE readings (
            seq INTEGER PRIMARY KEY,
            sensor VARCHAR(10) NOT NULL,
            value REAL,
            price DECIMAL(8,2),
            ok BOOLEAN,
            taken DATETIME,
            raw BLOB,
            extra JSON,
            anything
        );
        INSERT INTO readings VALUES
          (1, 'a', 1.5, 2.25, 1, '2024-01-01 10:00:00', x'00ff', '{\"k\": 1}', 'x'),
          (2, 'b', NULL, NULL, 0, '2024-01-01 11:00:00', NULL, NULL, 5),
          (3, 'c', 3.0, 10, NULL, NULL, NULL, '[1,2]', NULL),
          (4, 'd', -1, 1.1, 1, '2024-01-02 00:00:00', NULL, NULL, NULL),
          (5, 'e', 0, 0, 0, NULL, NULL, NULL, NULL);",
    )
    .unwrap();

    let out = p.run(&[], &[]);
    let log = stderr(&out);
    assert_eq!(ok(&out)["tables"]["readings"], 4, "seq >= 2: {log}");
    assert!(log.contains("WHERE q.\"seq\" >= ?1"), "{log}");
    let columns = p.columns("readings");
    let ty = |name: &str| columns.iter().find(|c| c.0 == name).unwrap().1.clone();
    assert_eq!(ty("seq"), "BIGINT");
    assert_eq!(ty("sensor"), "VARCHAR");
    assert_eq!(ty("value"), "DOUBLE");
    assert_eq!(ty("price"), "DECIMAL(8,2)");
    assert_eq!(ty("ok"), "BOOLEAN");
    assert_eq!(ty("taken"), "TIMESTAMP");
    assert_eq!(
        p.rows("SELECT seq, sensor, price, ok, taken FROM raw.readings ORDER BY seq")[0],
        ["2", "b", "NULL", "false", "2024-01-01 11:00:00"]
    );

    db.execute_batch("INSERT INTO readings (seq, sensor, raw) VALUES (6, 'f', x'0a0b')")
        .unwrap();
    let second = ok(&p.run(&[], &[]));
    assert_eq!(second["tables"]["readings"], 1, "only seq 6: {second}");
    assert_eq!(
        p.rows("SELECT hex(raw) FROM raw.readings WHERE seq = 6"),
        [["0A0B"]]
    );
}

#[test]
fn sqlite_missing_file_is_a_clear_error() {
    let p = Project::new(
        "[[resources]]\nname = \"readings\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"sqlite:nope.db\"\ntable = \"readings\"\n",
    );
    let out = p.run(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("nope.db: no such database file"), "{err}");
    assert!(
        !p.path().join("nope.db").exists(),
        "the file is not created"
    );
}

/// The golden SQLite scenario: real dlt 1.31.0's `sql_table` (default backend, reflection level
/// "full", merge on the reflected primary key, incremental on a naive DATETIME) over the same
/// scripts gave `expected.json`; highwater must give the same tables, types and rows.
#[test]
fn sqlite_matches_dlt_sql_table_golden_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/dlt_fixtures/sql_scenarios/sqlite_incremental");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let scenario = read("scenario.json");
    let expected = read("expected.json");
    let inc = &scenario["incremental"];
    let p = Project::new(&format!(
        "[[resources]]\nname = {table}\nwrite_disposition = {wd}\n\n[resources.source]\nkind = \"sql\"\nconnection = \"sqlite:source.db\"\ntable = {table}\nchunk_size = 2\n\n[resources.incremental]\ncursor_path = {}\ninitial_value = {}\n",
        inc["cursor_path"],
        inc["initial_value"],
        table = scenario["table"],
        wd = scenario["write_disposition"],
    ));
    let text = std::fs::read_to_string(p.path().join("pipeline.toml"))
        .unwrap()
        .replace(
            "name = \"shop\"",
            &format!("name = {}", scenario["pipeline"]),
        )
        .replace(
            "dataset = \"raw\"",
            &format!("dataset = {}", scenario["dataset"]),
        );
    std::fs::write(p.path().join("pipeline.toml"), text).unwrap();
    let source = rusqlite::Connection::open(p.path().join("source.db")).unwrap();
    for (i, script) in scenario["runs"].as_array().unwrap().iter().enumerate() {
        source
            .execute_batch(&std::fs::read_to_string(dir.join(script.as_str().unwrap())).unwrap())
            .unwrap();
        let out = ok(&p.run(&[], &[]));
        assert_eq!(
            out["load_ids"].as_array().unwrap().len() as u64,
            expected["run_load_ids"][i].as_u64().unwrap(),
            "run {i}"
        );
    }
    let dataset = scenario["dataset"].as_str().unwrap();
    let conn = p.db();
    let actual = common::dump_dataset(&conn, dataset);
    let wanted = common::expected_tables(&expected);
    let canonical = |rows: &[serde_json::Map<String, Value>]| -> Vec<String> {
        let mut out: Vec<String> = rows
            .iter()
            .map(|row| {
                let mut row = row.clone();
                row.remove("_dlt_id");
                row.remove("_dlt_load_id");
                Value::Object(row).to_string()
            })
            .collect();
        out.sort();
        out
    };
    for (table, want) in &wanted {
        let got = &actual[table];
        assert_eq!(got.columns, want.columns, "columns of {table}");
        assert_eq!(
            canonical(&got.rows),
            canonical(&want.rows),
            "rows of {table} (left: highwater, right: dlt)"
        );
    }
    assert_eq!(
        common::count(&conn, &format!("SELECT count(*) FROM {dataset}._dlt_loads")),
        expected["loads"].as_i64().unwrap()
    );
}

/// README's SQL example stays runnable: two tables of the bundled SQLite file, replace and an
/// incremental merge.
#[test]
fn the_sql_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sql_orders");
    for file in ["pipeline.toml", "shop.db"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    let run = || {
        highwater()
            .current_dir(dir.path())
            .args(["run", "pipeline.toml", "--json", "--progress", "none"])
            .output()
            .unwrap()
    };
    let first = ok(&run());
    assert_eq!(first["tables"]["customers"], 3);
    assert_eq!(first["tables"]["orders"], 4);
    let second = ok(&run());
    assert_eq!(second["tables"]["customers"], 3, "replaced again");
    assert!(second["tables"].get("orders").is_none(), "{second}");
    let db = duckdb::Connection::open(dir.path().join("shop.duckdb")).unwrap();
    let (rows, total): (i64, String) = db
        .query_row(
            "SELECT count(*), CAST(sum(amount) AS VARCHAR) FROM shop_data.orders",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, total.as_str()), (4, "159.49"));
}

/// A run of the sql source aborted at each stage (as a kill would) is finished by the next run:
/// the rows land once, and rows added in between are loaded too. (1,500 rows: the normalize
/// crash point is at the 1,000th item.)
#[test]
fn sql_runs_killed_at_every_stage_are_finished_by_the_next_run() {
    for point in CRASH_POINTS {
        let p = Project::new(
            "[[resources]]\nname = \"readings\"\nwrite_disposition = \"merge\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"sqlite:sensors.db\"\ntable = \"readings\"\nchunk_size = 100\n\n[resources.incremental]\ncursor_path = \"seq\"\ninitial_value = 0\n",
        );
        let db = rusqlite::Connection::open(p.path().join("sensors.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY, sensor TEXT NOT NULL, tags JSON);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
             INSERT INTO readings SELECT i, 's' || (i % 4), '[\"a\", \"b\"]' FROM n;",
        )
        .unwrap();
        let crashed = p.run(&[], &[("HIGHWATER_TEST_CRASH", point)]);
        assert!(!crashed.status.success(), "{point}: the run was aborted");
        db.execute_batch("INSERT INTO readings VALUES (1501, 's9', NULL)")
            .unwrap();
        ok(&p.run(&[], &[]));
        ok(&p.run(&[], &[]));
        assert_eq!(
            p.rows("SELECT count(*), count(DISTINCT seq), max(seq) FROM raw.readings"),
            [["1501", "1501", "1501"]],
            "{point}"
        );
        assert_eq!(
            p.rows("SELECT count(tags) FROM raw.readings"),
            [["1500"]],
            "{point}: a JSON column, as dlt makes declared JSON"
        );
    }
}

/// Real SIGKILLs while a PostgreSQL table is being read, normalized or loaded: the next run
/// finishes the work with every row exactly once.
#[test]
fn postgres_runs_killed_at_arbitrary_moments_lose_and_duplicate_nothing() {
    let server = pg::server();
    let (shop, _client) = server.database(
        "CREATE TABLE events AS
           SELECT i::bigint AS id, 'k' || (i % 13) AS kind,
                  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' AS updated_at
           FROM generate_series(1, 30000) AS i;
         ALTER TABLE events ADD PRIMARY KEY (id);",
    );
    let p = Project::new(&format!(
        "[[resources]]\nname = \"events\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"{}\"\ntable = \"events\"\nchunk_size = 500\n\n[resources.incremental]\ncursor_path = \"updated_at\"\ninitial_value = \"2024-01-01T00:00:00Z\"\n",
        server.url(&shop)
    ));
    for delay_ms in [60, 200, 450, 900] {
        let mut child = highwater()
            .current_dir(p.path())
            .args(["run", "pipeline.toml", "--progress", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    ok(&p.run(&[], &[]));
    ok(&p.run(&[], &[]));
    assert_eq!(
        p.rows("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM raw.events"),
        [["30000", "30000", "1", "30000"]]
    );
}

/// `--resource` builds only the selected resources: a database that is down for another resource
/// does not stop the run, and an unknown name is an error naming the file's resources.
#[test]
fn unselected_sql_resources_are_not_connected() {
    let p = Project::new(
        "[[resources]]\nname = \"readings\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"sqlite:sensors.db\"\ntable = \"readings\"\n\n[[resources]]\nname = \"orders\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"postgres://loader@127.0.0.1:1/shop\"\ntable = \"orders\"\n",
    );
    rusqlite::Connection::open(p.path().join("sensors.db"))
        .unwrap()
        .execute_batch("CREATE TABLE readings (seq INTEGER PRIMARY KEY); INSERT INTO readings VALUES (1), (2);")
        .unwrap();
    let out = p.run(&["--resource", "readings"], &[]);
    assert_eq!(ok(&out)["tables"]["readings"], 2);
    let all = p.run(&[], &[]);
    assert_eq!(all.status.code(), Some(1));
    assert!(
        stderr(&all).contains("postgres://loader@127.0.0.1:1/shop"),
        "{}",
        stderr(&all)
    );
    let unknown = p.run(&["--resource", "nope"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "bad usage");
    assert!(
        stderr(&unknown).contains("no resource named \"nope\" (resources: readings, orders)"),
        "{}",
        stderr(&unknown)
    );
}

/// A numeric cursor arrives as decimal text; the reflected `decimal` hint makes the incremental
/// compare it as a number (10.50 after 9.25), not as text.
#[test]
fn postgres_numeric_cursors_compare_as_numbers() {
    let server = pg::server();
    let (shop, mut pg) = server.database(
        "CREATE TABLE prices (sku text PRIMARY KEY, version numeric(6,2) NOT NULL);
         INSERT INTO prices VALUES ('a', 9.25), ('b', 2.00);",
    );
    let p = Project::new(&format!(
        "[[resources]]\nname = \"prices\"\n\n[resources.source]\nkind = \"sql\"\nconnection = \"{}\"\ntable = \"prices\"\n\n[resources.incremental]\ncursor_path = \"version\"\ninitial_value = 0\n",
        server.url(&shop)
    ));
    assert_eq!(ok(&p.run(&[], &[]))["tables"]["prices"], 2);
    pg.batch_execute("INSERT INTO prices VALUES ('c', 10.50), ('d', 3.00)")
        .unwrap();
    let second = ok(&p.run(&[], &[]));
    assert_eq!(second["tables"]["prices"], 1, "only 10.50: {second}");
    assert_eq!(
        p.rows("SELECT sku FROM raw.prices ORDER BY sku"),
        [["a"], ["b"], ["c"]]
    );
}
