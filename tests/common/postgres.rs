//! PostgreSQL for tests: a fresh database per test, inside one server per test process.
//!
//! The server is the one `DATABASE_URL` names when it is a `postgres` URL; otherwise a throwaway
//! cluster is created with the local `initdb`/`pg_ctl` in a temp directory, on a free port, with
//! trust authentication and `fsync=off`. A watchdog shell process outlives nothing: once the test
//! process is gone it stops the cluster and deletes the directory, so no exit hooks are needed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database};

/// The admin URL of this process's server, or why there is none (reported by every test).
static SERVER: OnceLock<Result<String, String>> = OnceLock::new();

const NO_POSTGRES: &str = "PostgreSQL tests need `initdb` and `pg_ctl` (on PATH or in \
     /usr/lib/postgresql/*/bin; e.g. `apt-get install postgresql`), or DATABASE_URL=postgres://… \
     naming a server where databases may be created. Set SKIP_POSTGRES_TESTS=1 to skip them.";

/// Creates an empty, uniquely named database and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = tokio::task::spawn_blocking(|| SERVER.get_or_init(server_url).clone())
        .await
        .expect("starting PostgreSQL panicked")
        .unwrap_or_else(|e| panic!("no PostgreSQL for the tests: {e}"));
    let name = format!("switchboard_test_{}", uuid::Uuid::now_v7().simple());

    let mut options = ConnectOptions::new(admin_url.clone());
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let admin = Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    admin.close().await.ok();

    let mut url = reqwest::Url::parse(&admin_url)
        .unwrap_or_else(|e| panic!("parsing DATABASE_URL {admin_url}: {e}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn server_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && url.starts_with("postgres")
    {
        return Ok(url);
    }
    start_cluster()
}

/// `initdb` + `pg_ctl start` into a new temp directory; returns the admin URL.
fn start_cluster() -> Result<String, String> {
    let bin = find_bin_dir().ok_or_else(|| NO_POSTGRES.to_owned())?;
    let owner = cluster_owner()?;
    let base = std::env::temp_dir().join(format!(
        "switchboard-test-pg-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let data = base.join("data");
    let sockets = base.join("sockets");
    let log = base.join("postgres.log");
    std::fs::create_dir_all(&sockets).map_err(|e| format!("creating {}: {e}", base.display()))?;
    if let Some(user) = &owner {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(&base))?;
    }
    // Started before anything else can fail, so the directory goes away whatever happens.
    spawn_watchdog(&bin, &base, owner.as_deref())?;

    run(as_owner(owner.as_deref(), &bin.join("initdb"), &base)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
        .arg("--no-sync")
        .arg("-D")
        .arg(&data))?;

    // The free port can be taken between our probe and the server's bind: try a few.
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let server_options = format!(
            "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            sockets.display()
        );
        let started = run(as_owner(owner.as_deref(), &bin.join("pg_ctl"), &base)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(server_options)
            .args(["-w", "-t", "60", "start"])
            // Its own process group, so a Ctrl-C of the test run leaves it to the watchdog.
            .process_group(0));
        match started {
            Ok(()) => return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            Err(e) => failures.push(e),
        }
    }
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    Err(format!(
        "starting the throwaway PostgreSQL failed: {}\n--- {} ---\n{server_log}",
        failures.join("\n"),
        log.display()
    ))
}

/// Stops the cluster and removes `base` once this process has exited.
fn spawn_watchdog(bin: &Path, base: &Path, owner: Option<&str>) -> Result<(), String> {
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -n "$4" ]; then
    runuser -u "$4" -- "$2" -D "$3/data" -m immediate stop
else
    "$2" -D "$3/data" -m immediate stop
fi
rm -rf "$3"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("switchboard-test-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(bin.join("pg_ctl"))
        .arg(base)
        .arg(owner.unwrap_or_default())
        .current_dir("/")
        // No inherited pipes: a test runner waiting for the output to close must not wait on it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("starting the PostgreSQL watchdog: {e}"))
}

/// `program` run as the cluster's owner: `initdb` refuses to run as root, so as root the cluster
/// belongs to a system user.
fn as_owner(owner: Option<&str>, program: &Path, cwd: &Path) -> Command {
    let mut command = match owner {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.current_dir(cwd);
    command
}

/// `None` when not root (the cluster runs as us); as root, `postgres` if it exists, else a
/// dedicated system user created once.
fn cluster_owner() -> Result<Option<String>, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("running `id -u`: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(None);
    }
    let exists = |user: &str| {
        Command::new("id")
            .arg("-u")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    const DEDICATED: &str = "switchboard-test";
    for user in ["postgres", DEDICATED] {
        if exists(user) {
            return Ok(Some(user.to_owned()));
        }
    }
    run(Command::new("useradd").args(["--system", "--no-create-home", DEDICATED]))?;
    Ok(Some(DEDICATED.to_owned()))
}

/// The directory holding `initdb` and `pg_ctl`: from PATH first, then the newest Debian-style
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| has_tools(dir))
        // A symlink on PATH (e.g. /usr/local/bin/initdb) points into the real installation.
        .filter_map(|dir| {
            dir.join("initdb")
                .canonicalize()
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        })
        .find(|dir| has_tools(dir));
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs `command` to completion; a failure carries its output.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start again on the same
/// port (a database outage). The watchdog removes it once the test process is gone.
pub struct OwnPostgres {
    bin: PathBuf,
    owner: Option<String>,
    base: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// `initdb` and start a new cluster on a free port.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(|| {
            let bin = find_bin_dir().unwrap_or_else(|| panic!("{NO_POSTGRES}"));
            let owner = cluster_owner().unwrap_or_else(|e| panic!("{e}"));
            let base = std::env::temp_dir().join(format!(
                "switchboard-test-own-pg-{}",
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::create_dir_all(base.join("sockets"))
                .unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
            if let Some(user) = &owner {
                run(Command::new("chown")
                    .arg("-R")
                    .arg(format!("{user}:"))
                    .arg(&base))
                .unwrap_or_else(|e| panic!("{e}"));
            }
            spawn_watchdog(&bin, &base, owner.as_deref()).unwrap_or_else(|e| panic!("{e}"));
            run(as_owner(owner.as_deref(), &bin.join("initdb"), &base)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .arg("-D")
                .arg(base.join("data")))
            .unwrap_or_else(|e| panic!("{e}"));
            let port = free_port().unwrap_or_else(|e| panic!("{e}"));
            let pg = Self {
                bin,
                owner,
                base,
                port,
            };
            pg.pg_ctl_start().unwrap_or_else(|e| panic!("{e}"));
            pg
        })
        .await
        .expect("starting PostgreSQL panicked")
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // Commits are synchronous here: the test stops the server with `-m immediate` and
        // checks that nothing acknowledged was lost.
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.base.join("sockets").display()
        );
        run(
            as_owner(self.owner.as_deref(), &self.bin.join("pg_ctl"), &self.base)
                .arg("-D")
                .arg(self.base.join("data"))
                .arg("-l")
                .arg(self.base.join("postgres.log"))
                .arg("-o")
                .arg(options)
                .args(["-w", "-t", "60", "start"])
                .process_group(0),
        )
    }

    /// Stops the server at once (`-m immediate`: connections break, as in a crash).
    pub async fn stop(&self) {
        let mut command = as_owner(self.owner.as_deref(), &self.bin.join("pg_ctl"), &self.base);
        command
            .arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .expect("pg_ctl panicked")
            .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    }

    /// Starts it again on the same port; returns once it accepts connections.
    pub async fn resume(&self) {
        let pg = Self {
            bin: self.bin.clone(),
            owner: self.owner.clone(),
            base: self.base.clone(),
            port: self.port,
        };
        tokio::task::spawn_blocking(move || pg.pg_ctl_start())
            .await
            .expect("pg_ctl panicked")
            .unwrap_or_else(|e| panic!("restarting PostgreSQL: {e}"));
    }
}
