//! The notification webhook's outbox. A delivery is written in the same transaction as the
//! notification it announces, so a crash or restart between the two cannot lose it; the worker
//! deletes it once the app's endpoint answered 2xx, or marks it `failed` after its last attempt.
//! `payload` is the exact body sent, fixed at creation: every retry carries the same bytes, the
//! same signature and the same idempotency key (the row's id).

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000005_webhook_deliveries"
    }
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    NotificationId,
    UserId,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .if_not_exists()
                .col(string_len(WebhookDeliveries::Id, 36).primary_key())
                .col(string_len(WebhookDeliveries::NotificationId, 36))
                .col(string_len(WebhookDeliveries::UserId, 128))
                .col(text(WebhookDeliveries::Payload))
                .col(string_len(WebhookDeliveries::Status, 16))
                .col(integer(WebhookDeliveries::Attempts))
                .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                .col(text_null(WebhookDeliveries::LastError))
                .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                .to_owned(),
        )
        .await?;
        // The worker asks for the pending deliveries that are due, earliest first.
        m.create_index(
            Index::create()
                .name("idx_webhook_deliveries_due")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::Status)
                .col(WebhookDeliveries::NextAttemptAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await
    }
}
