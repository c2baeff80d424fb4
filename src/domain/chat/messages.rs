//! Sending, editing and reading messages. `seq` comes from the room's counter, bumped inside
//! the insert's transaction, so it is gapless and unique across every node; a rejected or
//! failed message rolls back and takes no seq.

use chrono::Utc;
use entity::{message, room, room_member};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};

use super::content::clean_content;
use super::model::{Message, MessageType};
use super::{ChatService, is_unique_violation, new_id};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};

/// A message to send, as given by a client.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room_id: String,
    pub content: String,
    pub message_type: Option<MessageType>,
    pub reply_to_id: Option<String>,
    pub client_message_id: Option<String>,
}

/// The stored message, and whether it already existed (an idempotent retry: deliver nothing).
#[derive(Debug)]
pub struct Sent {
    pub message: Message,
    pub duplicate: bool,
}

/// How to page through a room's history.
#[derive(Clone, Copy, Debug)]
pub enum HistoryQuery<'a> {
    /// Newest first, strictly older than the message with this id (or from the newest).
    Before(Option<&'a str>),
    /// Oldest first, strictly after this seq: catch-up after a reconnect.
    AfterSeq(i64),
}

/// A page of messages. `next_cursor` continues a `Before` page; `has_more` says whether an
/// `AfterSeq` page was cut by the limit.
#[derive(Debug)]
pub struct History {
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

impl ChatService {
    /// Sends a message: membership, validation, idempotency, rate limit, then persistence.
    pub async fn send_message(&self, sender: &AuthUser, input: NewMessage) -> AppResult<Sent> {
        self.require_member(&input.room_id, &sender.id).await?;
        let message_type = input.message_type.unwrap_or(MessageType::Text);
        if message_type == MessageType::System {
            return Err(AppError::field(
                "type",
                "system messages are written by the server only",
            ));
        }
        let content = clean_content(&input.content, self.limits.max_message_length)?;
        if let Some(client_id) = &input.client_message_id
            && let Some(existing) = self
                .find_by_client_id(&input.room_id, &sender.id, client_id)
                .await?
        {
            return Ok(Sent {
                message: existing.into(),
                duplicate: true,
            });
        }
        if let Some(reply_to) = &input.reply_to_id {
            let same_room = message::Entity::find_by_id(reply_to.as_str())
                .filter(message::Column::RoomId.eq(input.room_id.as_str()))
                .one(&self.db)
                .await?
                .is_some();
            if !same_room {
                return Err(AppError::field(
                    "replyToId",
                    "must be a message of the same room",
                ));
            }
        }
        self.rate_limiter.check(&sender.id).await?;

        let row = message::ActiveModel {
            id: Set(new_id()),
            room_id: Set(input.room_id.clone()),
            seq: Set(0),
            user_id: Set(sender.id.clone()),
            sender_name: Set(sender.name.clone()),
            content: Set(content),
            message_type: Set(message_type.as_str().to_owned()),
            reply_to_id: Set(input.reply_to_id.clone()),
            client_message_id: Set(input.client_message_id.clone()),
            created_at: Set(Utc::now()),
            edited_at: Set(None),
            deleted: Set(false),
        };
        let result = self
            .writes
            .transaction::<_, message::Model, sea_orm::DbErr>(|tx| {
                Box::pin(async move { insert_next(tx, row).await })
            })
            .await;
        match result {
            Ok(stored) => Ok(Sent {
                message: stored.into(),
                duplicate: false,
            }),
            // A concurrent retry with the same client id won the race: answer with its message.
            Err(sea_orm::TransactionError::Transaction(e)) if is_unique_violation(&e) => {
                let client_id = input.client_message_id.as_deref().unwrap_or_default();
                match self
                    .find_by_client_id(&input.room_id, &sender.id, client_id)
                    .await?
                {
                    Some(existing) => Ok(Sent {
                        message: existing.into(),
                        duplicate: true,
                    }),
                    None => Err(AppError::Internal(e.into())),
                }
            }
            Err(
                sea_orm::TransactionError::Transaction(e)
                | sea_orm::TransactionError::Connection(e),
            ) => Err(e.into()),
        }
    }

    async fn find_by_client_id(
        &self,
        room_id: &str,
        user_id: &str,
        client_id: &str,
    ) -> AppResult<Option<message::Model>> {
        Ok(message::Entity::find()
            .filter(message::Column::RoomId.eq(room_id))
            .filter(message::Column::UserId.eq(user_id))
            .filter(message::Column::ClientMessageId.eq(client_id))
            .one(&self.db)
            .await?)
    }

    /// Replaces the content of one's own message.
    pub async fn edit_message(
        &self,
        actor: &str,
        room_id: &str,
        message_id: &str,
        content: &str,
    ) -> AppResult<Message> {
        // Who may edit is decided before what they wrote: someone else's message is FORBIDDEN
        // whatever the new text.
        let row = self.own_message(actor, room_id, message_id).await?;
        let content = clean_content(content, self.limits.max_message_length)?;
        if row.deleted {
            return Err(AppError::Conflict(
                "a deleted message cannot be edited".into(),
            ));
        }
        let mut active: message::ActiveModel = row.into();
        active.content = Set(content);
        active.edited_at = Set(Some(Utc::now()));
        Ok(active.update(&*self.writes.turn().await?).await?.into())
    }

    /// Deletes one's own message: it keeps its seq, loses its content.
    pub async fn delete_message(
        &self,
        actor: &str,
        room_id: &str,
        message_id: &str,
    ) -> AppResult<Message> {
        let row = self.own_message(actor, room_id, message_id).await?;
        if row.deleted {
            return Ok(row.into());
        }
        let mut active: message::ActiveModel = row.into();
        active.content = Set(String::new());
        active.deleted = Set(true);
        active.edited_at = Set(Some(Utc::now()));
        Ok(active.update(&*self.writes.turn().await?).await?.into())
    }

    async fn own_message(
        &self,
        actor: &str,
        room_id: &str,
        message_id: &str,
    ) -> AppResult<message::Model> {
        self.require_member(room_id, actor).await?;
        let row = message::Entity::find_by_id(message_id)
            .filter(message::Column::RoomId.eq(room_id))
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::NotFound("message not found".into()))?;
        if row.user_id != actor {
            return Err(AppError::Forbidden(
                "you can only change your own messages".into(),
            ));
        }
        Ok(row)
    }

    /// A page of a room's messages; the viewer must be a member.
    pub async fn history(
        &self,
        viewer: &str,
        room_id: &str,
        query: HistoryQuery<'_>,
        limit: u64,
    ) -> AppResult<History> {
        self.require_member(room_id, viewer).await?;
        let base = message::Entity::find()
            .filter(message::Column::RoomId.eq(room_id))
            .limit(limit + 1);
        let mut rows = match query {
            HistoryQuery::AfterSeq(after) => {
                base.filter(message::Column::Seq.gt(after))
                    .order_by_asc(message::Column::Seq)
                    .all(&self.db)
                    .await?
            }
            HistoryQuery::Before(cursor) => {
                let mut q = base.order_by_desc(message::Column::Seq);
                if let Some(id) = cursor {
                    let seq: i64 = message::Entity::find_by_id(id)
                        .filter(message::Column::RoomId.eq(room_id))
                        .select_only()
                        .column(message::Column::Seq)
                        .into_tuple()
                        .one(&self.db)
                        .await?
                        .ok_or_else(|| {
                            AppError::field("before", "is not a message of this room")
                        })?;
                    q = q.filter(message::Column::Seq.lt(seq));
                }
                q.all(&self.db).await?
            }
        };
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = match query {
            HistoryQuery::Before(_) if has_more => rows.last().map(|m| m.id.clone()),
            _ => None,
        };
        let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
        self.add_direct_status(viewer, room_id, &mut messages)
            .await?;
        Ok(History {
            messages,
            has_more,
            next_cursor,
        })
    }

    /// Full-text search in one room, newest first; only members may search.
    pub async fn search(
        &self,
        viewer: &str,
        room_id: &str,
        text: &str,
        limit: u64,
    ) -> AppResult<Vec<Message>> {
        self.require_member(room_id, viewer).await?;
        let terms: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if terms.is_empty() {
            return Err(AppError::field("q", "must not be empty"));
        }
        let backend = self.db.get_database_backend();
        let statement = match backend {
            DatabaseBackend::Postgres => Statement::from_sql_and_values(
                backend,
                "SELECT m.* FROM messages m WHERE m.room_id = $1 AND NOT m.deleted \
                 AND m.search @@ plainto_tsquery('simple', $2) ORDER BY m.seq DESC LIMIT $3",
                [
                    room_id.into(),
                    terms.join(" ").into(),
                    (limit as i64).into(),
                ],
            ),
            _ => {
                // Every term quoted: user input is matched as words, never as FTS5 syntax.
                let fts_query = terms
                    .iter()
                    .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join(" ");
                Statement::from_sql_and_values(
                    backend,
                    // Joined on `search_id`, never on the implicit rowid, which SQLite may
                    // renumber (see migration m20261201_000002).
                    "SELECT m.* FROM messages m JOIN messages_fts f ON f.rowid = m.search_id \
                     WHERE messages_fts MATCH ? AND m.room_id = ? AND NOT m.deleted \
                     ORDER BY m.seq DESC LIMIT ?",
                    [fts_query.into(), room_id.into(), (limit as i64).into()],
                )
            }
        };
        let rows = message::Model::find_by_statement(statement)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(Message::from).collect())
    }
}

/// Takes the room's next seq and inserts the message with it. The counter update locks the
/// room row (PostgreSQL) or the database (SQLite) until commit, so concurrent senders queue.
/// The sender has obviously seen everything up to their own message, so their watermarks move.
async fn insert_next(
    tx: &DatabaseTransaction,
    mut row: message::ActiveModel,
) -> Result<message::Model, sea_orm::DbErr> {
    let room_id = row.room_id.clone().unwrap();
    let user_id = row.user_id.clone().unwrap();
    let bump = Query::update()
        .table(room::Entity)
        .value(
            room::Column::LastSeq,
            Expr::col(room::Column::LastSeq).add(1),
        )
        .and_where(room::Column::Id.eq(room_id.as_str()))
        .returning_col(room::Column::LastSeq)
        .to_owned();
    let seq: i64 = tx
        .query_one(&bump)
        .await?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound("room".into()))?
        .try_get_by_index(0)?;
    row.seq = Set(seq);
    let stored = row.insert(tx).await?;
    room_member::Entity::update_many()
        .col_expr(room_member::Column::ReadSeq, Expr::value(seq))
        .col_expr(room_member::Column::DeliveredSeq, Expr::value(seq))
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::UserId.eq(user_id))
        .filter(room_member::Column::ReadSeq.lt(seq))
        .exec(tx)
        .await?;
    Ok(stored)
}
