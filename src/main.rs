//! Entry point: parse the command line, set up logging, run the command.

use clap::Parser;
use switchboard::cli::{Cli, Command};
use switchboard::startup::{Application, shutdown_signal};
use switchboard::{auth::JwtKeys, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command() {
        Command::Serve(config) => {
            telemetry::init(config.log_format);
            let app = Application::build(*config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Token {
            user_id,
            name,
            ttl,
            config,
        } => {
            let keys = JwtKeys::from_config(&config)?;
            if config.jwt_secret.is_none() {
                eprintln!("warning: JWT_SECRET is not set; signing with the development secret");
            }
            println!("{}", keys.sign(&user_id, name.as_deref(), ttl)?);
            Ok(())
        }
        Command::Migrate(config) => {
            telemetry::init(config.log_format);
            switchboard::db::connect_and_migrate_with(&config.database_url, config.db_waits())
                .await?;
            tracing::info!(database = %switchboard::db::redact(&config.database_url), "migrations applied");
            Ok(())
        }
    }
}
