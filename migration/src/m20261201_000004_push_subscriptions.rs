//! Web Push subscriptions: the browser's `PushSubscription` (endpoint plus the P-256 key and
//! auth secret its payloads are encrypted for), one row per endpoint. An endpoint names one
//! browser profile, so it is unique across users: when another user subscribes the same
//! browser, the row moves to them instead of pushing one user's notifications to the other.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000004_push_subscriptions"
    }
}

#[derive(DeriveIden)]
enum PushSubscriptions {
    Table,
    Id,
    UserId,
    Endpoint,
    P256dh,
    Auth,
    ExpirationTime,
    CreatedAt,
}

/// Longest endpoint URL accepted (FCM's are about 200 characters; Apple's and Mozilla's less).
const ENDPOINT_LEN: u32 = 2048;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(PushSubscriptions::Table)
                .if_not_exists()
                .col(string_len(PushSubscriptions::Id, 36).primary_key())
                .col(string_len(PushSubscriptions::UserId, 128))
                .col(string_len(PushSubscriptions::Endpoint, ENDPOINT_LEN))
                .col(string_len(PushSubscriptions::P256dh, 128))
                .col(string_len(PushSubscriptions::Auth, 64))
                .col(timestamp_with_time_zone_null(
                    PushSubscriptions::ExpirationTime,
                ))
                .col(timestamp_with_time_zone(PushSubscriptions::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_push_subscriptions_endpoint")
                .table(PushSubscriptions::Table)
                .col(PushSubscriptions::Endpoint)
                .unique()
                .to_owned(),
        )
        .await?;
        // Sending looks subscriptions up by recipient.
        m.create_index(
            Index::create()
                .name("idx_push_subscriptions_user")
                .table(PushSubscriptions::Table)
                .col(PushSubscriptions::UserId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(PushSubscriptions::Table).to_owned())
            .await
    }
}
