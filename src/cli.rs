//! `switchboard serve | token | migrate`.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Realtime Socket.IO server for chat, presence, notifications and feeds"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and Socket.IO (the default).
    Serve(Box<Config>),
    /// Print a user token signed with the configured HS256 secret, to try the server.
    Token {
        /// The user id (`sub`).
        user_id: String,
        /// Display name (`name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        config: Box<Config>,
    },
    /// Run database migrations and exit (they also run at every start).
    Migrate(Box<Config>),
}

impl Cli {
    /// The command, with `serve` when none was given (its settings from the environment).
    pub fn command(self) -> Command {
        self.command.unwrap_or_else(|| {
            let config = Cli::parse_from(["switchboard", "serve"]).command;
            match config {
                Some(command) => command,
                None => unreachable_serve(),
            }
        })
    }
}

fn unreachable_serve() -> Command {
    // `parse_from(["switchboard", "serve"])` always yields `Serve`; clap exits on bad env values.
    Command::Serve(Box::new(
        <ServeOnly as clap::Parser>::parse_from(["serve"]).config,
    ))
}

#[derive(Parser)]
struct ServeOnly {
    #[command(flatten)]
    config: Config,
}
