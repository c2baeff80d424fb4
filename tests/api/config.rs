//! `Config::validate`: what production refuses, and that startup enforces it.

use switchboard::config::Config;
use switchboard::startup::Application;

use crate::common::{ScratchDir, test_config};

const POSTGRES_URL: &str = "postgres://switchboard@db.internal:5432/switchboard";
const SECRET: &str = "a-production-secret-of-some-length";
const ORIGINS: &str = "https://app.example.com";

/// A production config with `args` after `--environment production`.
fn production(args: &[&str]) -> Config {
    let mut all = vec!["--environment", "production"];
    all.extend_from_slice(args);
    test_config(&all)
}

/// The validation error's text, failing the test when the config is accepted.
fn refusal(config: &Config) -> String {
    match config.validate() {
        Ok(()) => panic!("config accepted: {config:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn development_defaults_are_valid() {
    test_config(&[]).validate().expect("defaults validate");
}

#[test]
fn a_complete_production_config_is_valid() {
    production(&[
        "--database-url",
        POSTGRES_URL,
        "--jwt-secret",
        SECRET,
        "--cors-origins",
        ORIGINS,
    ])
    .validate()
    .expect("complete production config validates");
}

#[test]
fn production_refuses_the_development_jwt_secret() {
    let config = production(&["--database-url", POSTGRES_URL, "--cors-origins", ORIGINS]);

    let error = refusal(&config);

    assert!(error.contains("JWT_SECRET"), "{error}");
}

#[test]
fn an_empty_jwt_secret_is_refused_everywhere() {
    let error = refusal(&test_config(&["--jwt-secret", ""]));

    assert!(error.contains("JWT_SECRET"), "{error}");
}

#[test]
fn production_refuses_sqlite_unless_allowed() {
    let sqlite = ["--jwt-secret", SECRET, "--cors-origins", ORIGINS];

    let error = refusal(&production(&sqlite));
    assert!(error.contains("ALLOW_SQLITE_IN_PRODUCTION"), "{error}");

    let mut allowed = sqlite.to_vec();
    allowed.push("--allow-sqlite-in-production");
    production(&allowed)
        .validate()
        .expect("SQLite allowed explicitly");
}

#[test]
fn production_needs_cors_origins() {
    let config = production(&["--database-url", POSTGRES_URL, "--jwt-secret", SECRET]);

    let error = refusal(&config);

    assert!(error.contains("CORS_ORIGINS"), "{error}");
}

#[test]
fn asymmetric_algorithms_need_a_public_key_file() {
    for algorithm in ["RS256", "ES256"] {
        let error = refusal(&test_config(&["--jwt-algorithm", algorithm]));

        assert!(
            error.contains("JWT_PUBLIC_KEY_FILE"),
            "{algorithm}: {error}"
        );
    }
}

#[test]
fn algorithm_none_is_not_a_choice() {
    let command =
        <Config as clap::Args>::augment_args(clap::Command::new("t")).mut_args(|arg| arg.env(None));

    let result = command.try_get_matches_from(["t", "--jwt-algorithm", "none"]);

    assert!(result.is_err(), "`--jwt-algorithm none` was accepted");
}

#[tokio::test]
async fn startup_refuses_an_invalid_config() {
    // A scratch database, so a regression that reaches the connect step leaves nothing behind.
    let scratch = ScratchDir::new("config");
    let url = format!("sqlite://{}?mode=rwc", scratch.path().join("db").display());
    let config = test_config(&[
        "--port",
        "0",
        "--database-url",
        &url,
        "--jwt-algorithm",
        "RS256",
    ]);

    let result = Application::build(config).await;

    let error = format!("{:#}", result.err().expect("build refused"));
    assert!(error.contains("JWT_PUBLIC_KEY_FILE"), "{error}");
}

#[test]
fn push_and_webhook_settings_come_in_pairs() {
    let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
    let error = refusal(&test_config(&["--vapid-private-key", key]));
    assert!(error.contains("VAPID_SUBJECT"), "{error}");
    let error = refusal(&test_config(&[
        "--vapid-private-key",
        key,
        "--vapid-subject",
        "ops@example.com",
    ]));
    assert!(error.contains("mailto:"), "{error}");
    test_config(&[
        "--vapid-private-key",
        key,
        "--vapid-subject",
        "mailto:ops@example.com",
    ])
    .validate()
    .expect("a key with a subject validates");

    let error = refusal(&test_config(&[
        "--notification-webhook-url",
        "https://app.example.com/hook",
    ]));
    assert!(error.contains("NOTIFICATION_WEBHOOK_SECRET"), "{error}");
    let error = refusal(&test_config(&[
        "--notification-webhook-url",
        "app.example.com/hook",
        "--notification-webhook-secret",
        "s",
    ]));
    assert!(error.contains("http(s)"), "{error}");
}

#[tokio::test]
async fn a_key_that_is_not_p256_stops_startup() {
    let scratch = ScratchDir::new("vapid");
    let url = format!("sqlite://{}?mode=rwc", scratch.path().join("db").display());
    let config = test_config(&[
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--database-url",
        &url,
        "--vapid-private-key",
        "AAAA",
        "--vapid-subject",
        "mailto:ops@example.com",
    ]);
    let error = match Application::build(config).await {
        Ok(_) => panic!("a bad VAPID key was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("VAPID_PRIVATE_KEY"), "{error}");
}
