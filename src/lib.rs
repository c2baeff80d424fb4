//! Switchboard: a realtime Socket.IO server for chat, presence, notifications and live feeds.

/// JWT and service-key authentication for both transports.
pub mod auth;
/// The `switchboard` command line.
pub mod cli;
/// Redis connections for multi-node mode.
pub mod cluster;
/// Every setting and its environment variable.
pub mod config;
/// Database connection and migrations.
pub mod db;
/// Whether the database is known to be down.
pub mod db_status;
/// The demo page and its development token endpoint.
pub mod demo;
/// The product's rules, transport-free.
pub mod domain;
/// The one error type and its wire shapes.
pub mod error;
/// Freed heap memory handed back to the OS, so RSS follows the live heap.
pub mod heap;
/// The REST transport.
pub mod http;
/// Checks on raw input shared by both transports (no NUL characters anywhere).
pub mod input;
/// Prometheus metrics.
pub mod metrics;
/// Delivery beyond live sockets: Web Push and the notification webhook.
pub mod outbound;
/// One event pipeline for every transport: journal, cursors, ordered delivery.
pub mod pipeline;
/// The Socket.IO transport.
pub mod realtime;
/// What a SQLite `DATABASE_URL` means on disk.
pub mod sqlite_url;
/// Building and running the server.
pub mod startup;
/// State shared by handlers.
pub mod state;
/// Background tasks.
pub mod tasks;
/// Logging setup.
pub mod telemetry;
/// Timestamp formatting.
pub mod time;
/// The one way writes reach the database.
pub mod write_path;
