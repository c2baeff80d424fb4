//! A throwaway Redis for the tests that need one (or `REDIS_URL` when set): one
//! `redis-server` per test process on a free port, no persistence, stopped by a watchdog once
//! the test process exits.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SERVER: OnceLock<Result<String, String>> = OnceLock::new();

/// The Redis URL to use, starting a private server on first use.
pub fn url() -> String {
    SERVER
        .get_or_init(|| match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start(),
        })
        .clone()
        .unwrap_or_else(|e| panic!("Redis for tests: {e} (install redis-server or set REDIS_URL)"))
}

fn find_server() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

fn start() -> Result<String, String> {
    let server = find_server().ok_or("redis-server not found")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))?;
    // The watchdog runs redis-server and kills it when this test process is gone.
    const SCRIPT: &str = r#"
"$2" --port "$3" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
redis=$!
while kill -0 "$1" 2>/dev/null && kill -0 "$redis" 2>/dev/null; do sleep 1; done
kill "$redis" 2>/dev/null
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("switchboard-test-redis-watchdog")
        .arg(std::process::id().to_string())
        .arg(&server)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(format!("redis://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "redis-server did not listen on port {port} within 10 s"
    ))
}

/// A Redis of one test's own, which the test may stop and start again on the same port (an
/// outage). Killed when dropped; with util-linux `setpriv` it also dies with the test process.
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts a fresh `redis-server` on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("finding a free port for Redis");
        let mut redis = Self { port, child: None };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: connections break at once, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty; returns once it accepts connections.
    pub fn resume(&mut self) {
        let server = find_server().expect("redis-server not found");
        let setpriv = PathBuf::from("/usr/bin/setpriv");
        let mut command = if setpriv.is_file() {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(&server);
            c
        } else {
            Command::new(&server)
        };
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on port {} within 10 s",
            self.port
        );
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
