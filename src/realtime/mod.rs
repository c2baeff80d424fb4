//! The Socket.IO transport: thin handlers that parse payloads, call the domain services and
//! emit what the services report, all generic over the adapter so one node and many run the
//! same code.

pub mod ack;
mod connection;
pub mod rooms;

pub use connection::{NAMESPACE, on_connect};
