//! The whole relational schema the contract needs, with the indexes its queries use.
//!
//! Ids are stored as text: user ids are arbitrary JWT subjects, and the UUID v7 ids of rooms,
//! messages, notifications and activities sort lexicographically in creation order, which is
//! what the `before` cursors rely on, identically on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_create_schema"
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    AvatarUrl,
    LastSeen,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Follows {
    Table,
    FollowerId,
    FolloweeId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    Id,
    RoomType,
    Name,
    CreatedBy,
    CreatedAt,
    LastSeq,
    DirectKey,
}

#[derive(DeriveIden)]
enum RoomMembers {
    Table,
    RoomId,
    UserId,
    Role,
    JoinedAt,
    ReadSeq,
    ReadAt,
    DeliveredSeq,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    RoomId,
    Seq,
    UserId,
    SenderName,
    Content,
    MessageType,
    ReplyToId,
    ClientMessageId,
    CreatedAt,
    EditedAt,
    Deleted,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    NotificationType,
    Title,
    Message,
    Data,
    Priority,
    ActorId,
    ActorName,
    IsRead,
    CreatedAt,
    ExpiresAt,
    DedupKey,
}

#[derive(DeriveIden)]
enum NotificationPreferences {
    Table,
    UserId,
    Channels,
    ShareOnlineStatus,
    ShareTyping,
    ShareReadReceipts,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum FeedActivities {
    Table,
    Id,
    ActivityType,
    ActorId,
    TargetId,
    TargetType,
    Content,
    Metadata,
    Audience,
    CreatedAt,
}

const USER_ID_LEN: u32 = 128;
const UUID_LEN: u32 = 36;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .if_not_exists()
                .col(string_len(Users::Id, USER_ID_LEN).primary_key())
                .col(string(Users::Name))
                .col(text_null(Users::AvatarUrl))
                .col(timestamp_with_time_zone_null(Users::LastSeen))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Follows::Table)
                .if_not_exists()
                .col(string_len(Follows::FollowerId, USER_ID_LEN))
                .col(string_len(Follows::FolloweeId, USER_ID_LEN))
                .col(timestamp_with_time_zone(Follows::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(Follows::FollowerId)
                        .col(Follows::FolloweeId),
                )
                .to_owned(),
        )
        .await?;
        // "Who follows X" drives presence and feed fan-out.
        m.create_index(
            Index::create()
                .name("idx_follows_followee")
                .table(Follows::Table)
                .col(Follows::FolloweeId)
                .col(Follows::FollowerId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Rooms::Table)
                .if_not_exists()
                .col(string_len(Rooms::Id, UUID_LEN).primary_key())
                .col(string_len(Rooms::RoomType, 16))
                .col(string_null(Rooms::Name))
                .col(string_len(Rooms::CreatedBy, USER_ID_LEN))
                .col(timestamp_with_time_zone(Rooms::CreatedAt))
                // The per-room sequence counter: bumped with an atomic UPDATE … RETURNING inside
                // the message insert's transaction, so seq is gapless across nodes.
                .col(big_integer(Rooms::LastSeq).default(0))
                // "minId\nmaxId" for direct rooms: the unique index makes one room per pair.
                .col(string_null(Rooms::DirectKey).unique_key())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RoomMembers::Table)
                .if_not_exists()
                .col(string_len(RoomMembers::RoomId, UUID_LEN))
                .col(string_len(RoomMembers::UserId, USER_ID_LEN))
                .col(string_len(RoomMembers::Role, 16))
                .col(timestamp_with_time_zone(RoomMembers::JoinedAt))
                .col(big_integer(RoomMembers::ReadSeq).default(0))
                .col(timestamp_with_time_zone_null(RoomMembers::ReadAt))
                .col(big_integer(RoomMembers::DeliveredSeq).default(0))
                .primary_key(
                    Index::create()
                        .col(RoomMembers::RoomId)
                        .col(RoomMembers::UserId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(RoomMembers::Table, RoomMembers::RoomId)
                        .to(Rooms::Table, Rooms::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // "Rooms of user X" runs on every connect.
        m.create_index(
            Index::create()
                .name("idx_room_members_user")
                .table(RoomMembers::Table)
                .col(RoomMembers::UserId)
                .col(RoomMembers::RoomId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Messages::Table)
                .if_not_exists()
                .col(string_len(Messages::Id, UUID_LEN).primary_key())
                .col(string_len(Messages::RoomId, UUID_LEN))
                .col(big_integer(Messages::Seq))
                .col(string_len(Messages::UserId, USER_ID_LEN))
                .col(string(Messages::SenderName))
                .col(text(Messages::Content))
                .col(string_len(Messages::MessageType, 16))
                .col(string_len_null(Messages::ReplyToId, UUID_LEN))
                .col(string_len_null(Messages::ClientMessageId, 128))
                .col(timestamp_with_time_zone(Messages::CreatedAt))
                .col(timestamp_with_time_zone_null(Messages::EditedAt))
                .col(boolean(Messages::Deleted).default(false))
                .foreign_key(
                    ForeignKey::create()
                        .from(Messages::Table, Messages::RoomId)
                        .to(Rooms::Table, Rooms::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Gapless seq is enforced twice: by the counter and by this index.
        m.create_index(
            Index::create()
                .name("idx_messages_room_seq")
                .table(Messages::Table)
                .col(Messages::RoomId)
                .col(Messages::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
        // Idempotent retries: a second insert with the same client id loses the race here.
        m.create_index(
            Index::create()
                .name("idx_messages_client_id")
                .table(Messages::Table)
                .col(Messages::RoomId)
                .col(Messages::UserId)
                .col(Messages::ClientMessageId)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Notifications::Table)
                .if_not_exists()
                .col(string_len(Notifications::Id, UUID_LEN).primary_key())
                .col(string_len(Notifications::UserId, USER_ID_LEN))
                .col(string_len(Notifications::NotificationType, 32))
                .col(string(Notifications::Title))
                .col(text(Notifications::Message))
                .col(text(Notifications::Data))
                .col(string_len(Notifications::Priority, 8))
                .col(string_len_null(Notifications::ActorId, USER_ID_LEN))
                .col(string_null(Notifications::ActorName))
                .col(boolean(Notifications::IsRead).default(false))
                .col(timestamp_with_time_zone(Notifications::CreatedAt))
                .col(timestamp_with_time_zone_null(Notifications::ExpiresAt))
                .col(string_null(Notifications::DedupKey))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_notifications_user")
                .table(Notifications::Table)
                .col(Notifications::UserId)
                .col(Notifications::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_notifications_unread")
                .table(Notifications::Table)
                .col(Notifications::UserId)
                .col(Notifications::IsRead)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_notifications_dedup")
                .table(Notifications::Table)
                .col(Notifications::UserId)
                .col(Notifications::DedupKey)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_notifications_expires")
                .table(Notifications::Table)
                .col(Notifications::ExpiresAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(NotificationPreferences::Table)
                .if_not_exists()
                .col(string_len(NotificationPreferences::UserId, USER_ID_LEN).primary_key())
                // JSON object: type → { inApp, push, email }; absent types use the defaults.
                .col(text(NotificationPreferences::Channels))
                .col(boolean(NotificationPreferences::ShareOnlineStatus).default(true))
                .col(boolean(NotificationPreferences::ShareTyping).default(true))
                .col(boolean(NotificationPreferences::ShareReadReceipts).default(true))
                .col(timestamp_with_time_zone(NotificationPreferences::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FeedActivities::Table)
                .if_not_exists()
                .col(string_len(FeedActivities::Id, UUID_LEN).primary_key())
                .col(string_len(FeedActivities::ActivityType, 32))
                .col(string_len(FeedActivities::ActorId, USER_ID_LEN))
                .col(string(FeedActivities::TargetId))
                .col(string_len(FeedActivities::TargetType, 32))
                .col(text_null(FeedActivities::Content))
                .col(text_null(FeedActivities::Metadata))
                .col(string_len(FeedActivities::Audience, 16))
                .col(timestamp_with_time_zone(FeedActivities::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_feed_actor")
                .table(FeedActivities::Table)
                .col(FeedActivities::ActorId)
                .col(FeedActivities::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_feed_audience")
                .table(FeedActivities::Table)
                .col(FeedActivities::Audience)
                .col(FeedActivities::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_feed_created")
                .table(FeedActivities::Table)
                .col(FeedActivities::CreatedAt)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            FeedActivities::Table.into_iden(),
            NotificationPreferences::Table.into_iden(),
            Notifications::Table.into_iden(),
            Messages::Table.into_iden(),
            RoomMembers::Table.into_iden(),
            Rooms::Table.into_iden(),
            Follows::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
