//! A real PostgreSQL server for the tests: a fresh cluster (Debian's `postgresql` package,
//! `initdb` + `pg_ctl`) in a temporary folder, listening on 127.0.0.1, one per test process and
//! a new database per test. A watchdog stops the cluster and removes its folder when the test
//! process ends, however it ends.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running cluster.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    run_as_postgres: bool,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The test process's server, started on first use.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| PgServer::start(&[]))
}

impl PgServer {
    /// Starts a cluster with extra `postgres -c` settings (e.g. TLS); stopped when the test
    /// process ends.
    pub fn start(settings: &[(&str, &str)]) -> PgServer {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("highwater-pg-")
            .tempdir()
            .expect("creating a folder for the PostgreSQL cluster")
            .keep();
        // initdb refuses to run as root: the cluster then belongs to the `postgres` user.
        let run_as_postgres = is_root();
        if run_as_postgres {
            let uid = id_of("postgres");
            std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            dir,
            bin,
            port,
            run_as_postgres,
        };
        let data = server.dir.join("data");
        server.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone=UTC -c max_connections=200",
            server.port,
            server.dir.display()
        );
        for (key, value) in settings {
            options.push_str(&format!(" -c {key}={value}"));
        }
        let log = server.dir.join("log");
        server.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        server.watch();
        server
    }

    /// The cluster's folder (owned by the server's user).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Hands `path` to the cluster's owner (server key files must belong to it).
    pub fn give(&self, path: &std::path::Path) {
        if self.run_as_postgres {
            std::os::unix::fs::chown(path, Some(id_of("postgres")), None).unwrap();
        }
    }

    /// A watchdog process that stops the cluster once this process is gone. It outlives this
    /// process on purpose, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn watch(&self) {
        let data = self.dir.join("data");
        let stop = self.tool_line("pg_ctl");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            data = data.display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the PostgreSQL watchdog");
    }

    fn tool_line(&self, tool: &str) -> String {
        let program = self.bin.join(tool);
        if self.run_as_postgres {
            format!("runuser -u postgres -- '{}'", program.display())
        } else {
            format!("'{}'", program.display())
        }
    }

    /// A PostgreSQL tool, run as the cluster's owner.
    pub fn tool(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let output = self.tool(tool).args(args).output().unwrap_or_else(|e| {
            panic!("{tool} could not start ({e}): install PostgreSQL (apt-get install postgresql) or set HIGHWATER_PG_BIN")
        });
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A client of `database`.
    pub fn connect(&self, database: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(database), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url(database)))
    }

    /// A new, empty database with a unique name; returns its name.
    pub fn new_database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    /// A new database, filled by `setup` (SQL statements); returns its name and a client.
    pub fn database(&self, setup: &str) -> (String, postgres::Client) {
        let name = self.new_database();
        let mut client = self.connect(&name);
        client.batch_execute(setup).unwrap();
        (name, client)
    }
}

/// The newest installed PostgreSQL's binaries (`apt-get install postgresql` puts them in
/// `/usr/lib/postgresql/<version>/bin`; `.ci/run` installs the package when it is missing).
fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HIGHWATER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install postgresql (or set HIGHWATER_PG_BIN)")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin: apt-get install postgresql (or set HIGHWATER_PG_BIN)")
        .1
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn id_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no OS user {user:?}: the postgresql package creates it"))
}
