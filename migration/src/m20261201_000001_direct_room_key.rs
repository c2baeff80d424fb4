//! Direct-room keys in an unambiguous form. The first schema joined the sorted pair of user ids
//! with a newline, but user ids are any string, so two different pairs could share a key (and
//! one of them would have been handed the other's room). The key is now the JSON array of the
//! sorted pair: JSON string escaping cannot be forged by any id, and it never contains a raw
//! newline, so an old key can never equal a new one while the rewrite runs.
//!
//! Existing keys are rewritten from the rooms' members rather than parsed, because an old key
//! with more than one newline cannot be split back into its pair.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000001_direct_room_key"
    }
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    Id,
    DirectKey,
}

#[derive(DeriveIden)]
enum RoomMembers {
    Table,
    RoomId,
    UserId,
}

/// The key of the pair `a`, `b` as the application computes it since this migration. A frozen
/// copy: the application's own function may change in a later migration, this one must not.
fn direct_key(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    serde_json::json!([first, second]).to_string()
}

/// The key of the first schema, to go back down.
fn legacy_key(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("{first}\n{second}")
}

/// Recomputes the key of every direct room from its two members with `key`. Rooms that do not
/// have exactly two members (never made by the application) keep the key they have.
async fn rewrite(m: &SchemaManager<'_>, key: fn(&str, &str) -> String) -> Result<(), DbErr> {
    let db = m.get_connection();
    let select = Query::select()
        .column((RoomMembers::Table, RoomMembers::RoomId))
        .column((RoomMembers::Table, RoomMembers::UserId))
        .from(RoomMembers::Table)
        .inner_join(
            Rooms::Table,
            Expr::col((Rooms::Table, Rooms::Id)).equals((RoomMembers::Table, RoomMembers::RoomId)),
        )
        .and_where(Expr::col((Rooms::Table, Rooms::DirectKey)).is_not_null())
        .order_by((RoomMembers::Table, RoomMembers::RoomId), Order::Asc)
        .to_owned();
    let mut members: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in db.query_all(&select).await? {
        let room_id: String = row.try_get_by_index(0)?;
        let user_id: String = row.try_get_by_index(1)?;
        members.entry(room_id).or_default().push(user_id);
    }
    for (room_id, pair) in members {
        let [a, b] = pair.as_slice() else { continue };
        let update = Query::update()
            .table(Rooms::Table)
            .value(Rooms::DirectKey, key(a, b))
            .and_where(Expr::col(Rooms::Id).eq(room_id))
            .to_owned();
        db.execute(&update).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All keys or none: on SQLite too, where migrations run outside a transaction by default.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rewrite(m, direct_key).await
    }

    /// Back to the newline form; fails on the unique index if two rooms now exist whose pairs
    /// collide under it, which is the ambiguity this migration removed.
    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rewrite(m, legacy_key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_that_shared_a_newline_key_get_distinct_keys() {
        assert_eq!(legacy_key("a\nb", "c"), legacy_key("a", "b\nc"));
        assert_ne!(direct_key("a\nb", "c"), direct_key("a", "b\nc"));
        assert_eq!(direct_key("bob", "alice"), direct_key("alice", "bob"));
        assert!(!direct_key("a\nb", "c").contains('\n'));
    }
}
