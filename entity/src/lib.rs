//! SeaORM entities, one module per table. Column semantics live with the migration
//! (`migration/src`); these types only mirror it for typed queries.

pub mod feed_activity;
pub mod follow;
pub mod message;
pub mod notification;
pub mod notification_preference;
pub mod push_subscription;
pub mod room;
pub mod room_member;
pub mod user;
pub mod webhook_delivery;
