//! Test harness: runs the real server on port 0 against a fresh database per test, SQLite or
//! PostgreSQL, and builds configurations without reading the environment.

mod postgres;
pub mod receiver;
mod redis;
pub mod socket;

pub use postgres::OwnPostgres;
pub use redis::OwnRedis;
pub use redis::url as redis_url;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use switchboard::config::{Config, LogFormat};
use switchboard::startup::Application;
use switchboard::state::Core;
use tokio_util::sync::CancellationToken;

/// The HS256 secret every spawned app verifies user tokens with.
pub const TEST_JWT_SECRET: &str = "switchboard-test-secret-0123456789abcdef";

/// Where a spawned app keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a scratch directory, removed when the test ends.
    Sqlite,
    /// A fresh database inside one throwaway PostgreSQL cluster shared by the test process (or
    /// inside the server `DATABASE_URL` points at, when it is a `postgres` URL).
    Postgres,
}

/// Whether PostgreSQL-backed tests should be skipped (`SKIP_POSTGRES_TESTS=1`).
pub fn skip_postgres() -> bool {
    let skip = std::env::var("SKIP_POSTGRES_TESTS").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        eprintln!("SKIP_POSTGRES_TESTS is set: skipping a PostgreSQL test");
    }
    skip
}

/// Writes a test once and runs it on each backend: `backend_tests!(name, …)` expects
/// `async fn name(backend: Backend)` in scope and adds `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::common::skip_postgres() {
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// A running server, stopped when dropped.
pub struct TestApp {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    /// The server's shared state: its database pool, JWT keys and configuration.
    pub core: Arc<Core>,
    shutdown: CancellationToken,
    /// Holds the SQLite file; removed on drop.
    _scratch: Option<ScratchDir>,
}

impl TestApp {
    /// A one-hour token for `user_id`, signed with [`TEST_JWT_SECRET`].
    pub fn token(&self, user_id: &str) -> String {
        self.token_named(user_id, None)
    }

    /// A one-hour token for `user_id` with a display name.
    pub fn token_named(&self, user_id: &str, name: Option<&str>) -> String {
        self.core
            .jwt
            .sign(user_id, name, Duration::from_secs(3600))
            .expect("signing a test token")
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path`, failing the test when the request cannot be sent.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the server on a free port with a fresh database and the test JWT secret.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app`], with extra `switchboard serve` flags (e.g. `["--rate-limit-per-minute",
/// "3"]`); a flag given here replaces the harness's own value for it.
pub async fn spawn_app_with(backend: Backend, extra_args: &[&str]) -> TestApp {
    let (database_url, scratch) = fresh_database(backend).await;
    spawn_app_on(backend, &database_url, scratch, extra_args).await
}

/// `nodes` apps sharing one fresh database and one Redis (under a key prefix of their own): a
/// cluster in one process, for cross-node rules.
pub async fn spawn_cluster(backend: Backend, nodes: usize, extra_args: &[&str]) -> Vec<TestApp> {
    spawn_cluster_on(backend, nodes, &redis::url(), extra_args).await
}

/// Like [`spawn_cluster`], on the Redis at `redis_url` (e.g. an [`OwnRedis`] a test restarts).
pub async fn spawn_cluster_on(
    backend: Backend,
    nodes: usize,
    redis_url: &str,
    extra_args: &[&str],
) -> Vec<TestApp> {
    let (database_url, scratch) = fresh_database(backend).await;
    let prefix = format!("sbtest-{}", uuid::Uuid::now_v7().simple());
    let mut args = vec![
        "--redis-url",
        redis_url,
        "--redis-key-prefix",
        prefix.as_str(),
    ];
    args.extend_from_slice(extra_args);
    let mut apps = Vec::with_capacity(nodes);
    // The first node keeps the SQLite file alive for all of them.
    let mut scratch = scratch;
    for _ in 0..nodes {
        apps.push(spawn_app_on(backend, &database_url, scratch.take(), &args).await);
    }
    apps
}

/// A fresh database for `backend`: its URL, and the directory holding it for SQLite.
pub async fn fresh_database(backend: Backend) -> (String, Option<ScratchDir>) {
    match backend {
        Backend::Sqlite => {
            let scratch = ScratchDir::new("sqlite");
            let url = format!(
                "sqlite://{}?mode=rwc",
                scratch.path().join("switchboard.db").display()
            );
            (url, Some(scratch))
        }
        Backend::Postgres => (postgres::fresh_database().await, None),
    }
}

/// Starts the server on an existing database (e.g. an [`OwnPostgres`] a test stops).
pub async fn spawn_app_on_database(database_url: &str, extra_args: &[&str]) -> TestApp {
    spawn_app_on(Backend::Postgres, database_url, None, extra_args).await
}

async fn spawn_app_on(
    backend: Backend,
    database_url: &str,
    scratch: Option<ScratchDir>,
    extra_args: &[&str],
) -> TestApp {
    init_logging();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--database-url",
        database_url,
        "--jwt-secret",
        TEST_JWT_SECRET,
        // Nothing waits for a graceful stop: the test's runtime ends with the test.
        "--shutdown-timeout-ms",
        "1000",
    ];
    args.extend_from_slice(extra_args);
    let config = test_config(&args);

    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("building the app on {backend:?}: {e:#}"));
    let port = app.port();
    let core = app.core();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(e) = app.run_until(signal).await {
            eprintln!("test server stopped with an error: {e:#}");
        }
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client"),
        core,
        shutdown,
        _scratch: scratch,
    }
}

/// Seconds since the Unix epoch, for hand-made token claims.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token over arbitrary `claims`, for tokens [`TestApp::token`] would never make
/// (expired, no `exp`, another secret…).
pub fn hs256_token(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encoding a test token")
}

/// A [`Config`] from `switchboard serve` flags alone: unlike the binary, it ignores environment
/// variables, so a developer's `DATABASE_URL` or `JWT_ISSUER` cannot leak into a test.
/// Panics on flags clap refuses.
pub fn test_config(args: &[&str]) -> Config {
    let command = Config::augment_args(clap::Command::new("switchboard-test"))
        .mut_args(|arg| arg.env(None))
        .args_override_self(true);
    let argv =
        std::iter::once(OsString::from("switchboard-test")).chain(args.iter().map(OsString::from));
    let matches = command
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("test config flags {args:?}: {e}"));
    Config::from_arg_matches(&matches).unwrap_or_else(|e| panic!("test config {args:?}: {e}"))
}

/// Server logs stay quiet unless `TEST_LOG` is set (then `RUST_LOG` filters them as usual).
fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        switchboard::telemetry::init(LogFormat::Pretty);
    }
}

/// A uniquely named directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(purpose: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "switchboard-test-{purpose}-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A signed-in user as the services see one, named after its id, without a name claim.
pub fn user(id: &str) -> switchboard::auth::AuthUser {
    switchboard::auth::AuthUser {
        id: id.to_owned(),
        name: id.to_owned(),
        name_from_token: false,
    }
}

/// A group room of `owner` and `others`, made through the chat service; its id.
pub async fn group(app: &TestApp, owner: &str, others: &[String]) -> String {
    let (room, _) = app
        .core
        .chat
        .create_room(
            owner,
            switchboard::domain::chat::NewRoom {
                participants: others.to_vec(),
                room_type: Some(switchboard::domain::chat::RoomType::Group),
                name: Some(format!("{owner}'s room")),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("creating a room: {e:?}"));
    room.id
}

/// The one integer `sql` (a `count(*)`) reads on the app's database.
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let db = &app.core.db;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get_by_index::<i64>(0).expect("a count")
}

/// A text message from `from` to the room, through the chat service; the stored message.
pub async fn send_text(
    app: &TestApp,
    from: &str,
    room_id: &str,
    text: &str,
) -> switchboard::domain::chat::Message {
    let message = switchboard::domain::chat::NewMessage {
        room_id: room_id.to_owned(),
        content: text.to_owned(),
        message_type: None,
        reply_to_id: None,
        client_message_id: None,
    };
    app.core
        .chat
        .send_message(&user(from), message)
        .await
        .unwrap_or_else(|e| panic!("{from} sending {text:?}: {e:?}"))
        .message
}
