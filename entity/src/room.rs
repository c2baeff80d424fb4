//! A chat room. `last_seq` is the per-room message counter.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rooms")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `direct`, `group` or `public`.
    pub room_type: String,
    pub name: Option<String>,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub last_seq: i64,
    /// Set for direct rooms only: the sorted member pair, unique so a pair has one room.
    #[sea_orm(unique)]
    pub direct_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::room_member::Entity")]
    Members,
    #[sea_orm(has_many = "super::message::Entity")]
    Messages,
}

impl Related<super::room_member::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Members.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
