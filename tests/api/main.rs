//! Integration tests: the real server on port 0 over HTTP, on SQLite and PostgreSQL, plus the
//! pieces (token verification, configuration checks) that guard every transport.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod auth;
mod chat;
mod cluster;
mod config;
mod demo;
mod flood;
mod fuzz;
mod group_commit;
mod health;
mod heartbeat;
mod http_edges;
mod integrity;
mod live_views;
mod load;
mod migrations;
mod openapi;
mod outage;
mod poll;
mod presence;
mod presence_pipeline;
mod profile_names;
mod push;
mod rest_auth;
mod resume;
mod sqlite_urls;
mod sse;
mod webhook;
mod write_path;
