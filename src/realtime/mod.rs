//! The Socket.IO transport: thin handlers that parse payloads, call the domain services and
//! emit what the services report, all generic over the adapter so one node and many run the
//! same code.

pub mod ack;
pub mod actions;
mod budget;
mod chat;
mod connection;
mod context;
pub mod cooldown;
pub mod emit;
mod events;
mod feed;
mod feed_counts;
pub mod membership;
mod notifications;
mod order;
pub mod presence;
pub mod room_presence;
pub mod rooms;
pub mod slots;
pub(crate) mod slow;

pub use connection::{NAMESPACE, grace, on_connect, setup_turns};
pub use membership::{announce_added, announce_removed, deliver_invites};
pub use slow::sweeper as slow_socket_sweeper;
