//! Schema migrations. They run at every start (and via `switchboard migrate`), on SQLite and
//! PostgreSQL alike; anything backend-specific (full-text search) branches on the backend inside
//! the migration rather than in a separate migration chain.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_schema;
mod m20261122_000002_message_search;
mod m20261201_000001_direct_room_key;
mod m20261201_000002_message_search_id;
mod m20261201_000003_event_journal;
mod m20261201_000004_push_subscriptions;
mod m20261201_000005_webhook_deliveries;
mod m20261206_000001_deferred_search_index;

/// Every migration in the order it must run.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_schema::Migration),
            Box::new(m20261122_000002_message_search::Migration),
            Box::new(m20261201_000001_direct_room_key::Migration),
            Box::new(m20261201_000002_message_search_id::Migration),
            Box::new(m20261201_000003_event_journal::Migration),
            Box::new(m20261201_000004_push_subscriptions::Migration),
            Box::new(m20261201_000005_webhook_deliveries::Migration),
            Box::new(m20261206_000001_deferred_search_index::Migration),
        ]
    }
}
