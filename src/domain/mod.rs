//! The rules of the product, free of transport types: services take plain inputs and return
//! values; the REST and Socket.IO layers decide what to emit to whom.

pub mod bounded;
pub mod cache;
pub mod chat;
pub mod feed;
pub mod follows;
pub mod notifications;
pub mod preferences;
pub mod presence;
pub mod push_subscriptions;
pub mod rate_limit;
pub mod typing;
pub mod users;
