//! Integration tests: the real server on port 0 over HTTP, on SQLite and PostgreSQL, plus the
//! pieces (token verification, configuration checks) that guard every transport.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod auth;
mod chat;
mod cluster;
mod config;
mod fuzz;
mod health;
mod integrity;
mod migrations;
mod presence;
mod rest_auth;
