//! A user's delivery and privacy switches. A missing row means every switch is on.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_preferences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// JSON object: notification type → `{ inApp, push, email }`.
    #[sea_orm(column_type = "Text")]
    pub channels: String,
    pub share_online_status: bool,
    pub share_typing: bool,
    pub share_read_receipts: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
