//! An activity published by the app's backend for the live feed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "feed_activities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub activity_type: String,
    pub actor_id: String,
    pub target_id: String,
    pub target_type: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub content: Option<String>,
    /// JSON document stored as text.
    #[sea_orm(column_type = "Text", nullable)]
    pub metadata: Option<String>,
    /// `followers` or `public`.
    pub audience: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
