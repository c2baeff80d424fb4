//! SQLite `DATABASE_URL`s as operators write them: every form creates its file on first start,
//! and a directory that does not exist is refused with a message naming it.

use std::path::Path;
use std::process::Command;

use switchboard::startup::Application;

use crate::common::{Backend, ScratchDir, spawn_app_with, test_config};

/// Starts the server on `url` and checks it answers and created `file`.
async fn starts_on(url: &str, file: &Path) {
    let app = spawn_app_with(Backend::Sqlite, &["--database-url", url]).await;

    let health = app.get("/health").await;

    assert_eq!(health.status(), 200, "{url}");
    assert!(file.is_file(), "{url} did not create {}", file.display());
}

#[tokio::test]
async fn an_absolute_path_without_query_creates_the_file() {
    let scratch = ScratchDir::new("sqlite-abs");
    let file = scratch.path().join("data.db");
    // The scratch path is absolute, so this is `sqlite:///tmp/…/data.db`.
    let url = format!("sqlite://{}", file.display());
    assert!(url.starts_with("sqlite:///"), "{url}");

    starts_on(&url, &file).await;
}

#[tokio::test]
async fn the_single_colon_absolute_form_creates_the_file() {
    let scratch = ScratchDir::new("sqlite-abs1");
    let file = scratch.path().join("data.db");

    starts_on(&format!("sqlite:{}", file.display()), &file).await;
}

#[tokio::test]
async fn mode_rwc_still_works() {
    let scratch = ScratchDir::new("sqlite-rwc");
    let file = scratch.path().join("data.db");

    starts_on(&format!("sqlite://{}?mode=rwc", file.display()), &file).await;
}

#[tokio::test]
async fn a_missing_directory_is_refused_naming_it() {
    let scratch = ScratchDir::new("sqlite-missing");
    let missing = scratch.path().join("no-such-dir");
    let url = format!("sqlite://{}", missing.join("data.db").display());
    let config = test_config(&["--port", "0", "--database-url", &url]);

    let result = Application::build(config).await;

    let error = format!("{:#}", result.err().expect("start refused"));
    assert!(error.contains("does not exist"), "{error}");
    assert!(
        error.contains(&missing.display().to_string()),
        "the message names the directory: {error}"
    );
    assert!(!missing.exists(), "nothing was created");
}

/// Relative URLs resolve against the working directory, which a test must not change for the
/// whole process: `switchboard migrate` runs as a child process in a scratch directory.
#[test]
fn relative_forms_create_the_file_in_the_working_directory() {
    for (url, created) in [
        ("sqlite://rel.db", "rel.db"),
        ("sqlite:rel.db", "rel.db"),
        ("sqlite://rel.db?mode=rwc", "rel.db"),
    ] {
        let scratch = ScratchDir::new("sqlite-rel");

        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("migrate")
            .current_dir(scratch.path())
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("running switchboard migrate");

        assert!(
            output.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            scratch.path().join(created).is_file(),
            "{url} did not create {created}"
        );
    }
}
