//! Sending, editing and reading messages. `seq` comes from the room's counter, bumped inside
//! the insert's transaction, so it is gapless and unique across every node; a rejected or
//! failed message rolls back and takes no seq. New messages are group-committed: see
//! [`insert_batch`] and [`crate::write_path`].

use chrono::Utc;
use entity::message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};

use super::batch_sql;
use super::content::clean_content;
use super::model::{Message, MessageType};
use super::{ChatService, is_unique_violation, new_id};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::write_path::{Announce, Committed, Queued};

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
    /// The announcement journaled with the message (see [`ChatService::send_announced`]),
    /// to hand to the pipeline for delivery.
    pub event: Option<crate::pipeline::Event>,
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
    /// Sends a message: membership, validation, rate limit, then persistence, group-committed
    /// with concurrent senders ([`crate::write_path::WritePath::insert_message`]); idempotency on
    /// `clientMessageId` is checked inside the batch, so a retry costs no query of its own.
    pub async fn send_message(&self, sender: &AuthUser, input: NewMessage) -> AppResult<Sent> {
        self.send_announced(sender, input, None).await
    }

    /// [`ChatService::send_message`], journaling the event `announce` builds from the stored
    /// row in the message's own transaction: stored and announced, or neither.
    pub async fn send_announced(
        &self,
        sender: &AuthUser,
        input: NewMessage,
        announce: Option<Announce>,
    ) -> AppResult<Sent> {
        self.send_in_line(sender, input, announce, None).await
    }

    /// [`ChatService::send_announced`], firing `queued` once the message has its place in the
    /// write path's queue (its seq then follows every message queued before it), or dropping
    /// it unfired when the message is refused first: a socket lets its next event start then.
    pub async fn send_in_line(
        &self,
        sender: &AuthUser,
        input: NewMessage,
        announce: Option<Announce>,
        queued: Option<Queued>,
    ) -> AppResult<Sent> {
        self.require_member(&input.room_id, &sender.id).await?;
        let message_type = input.message_type.unwrap_or(MessageType::Text);
        if message_type == MessageType::System {
            return Err(AppError::field(
                "type",
                "system messages are written by the server only",
            ));
        }
        let content = clean_content(&input.content, self.limits.max_message_length)?;
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
        if let Err(limited) = self.rate_limiter.check(&sender.id).await {
            // A retry of a stored message is answered, never rate limited. Looked up only here,
            // on the refused path: retries are otherwise found inside the insert batch.
            if let Some(client_id) = &input.client_message_id
                && let Some(existing) = self
                    .find_by_client_id(&input.room_id, &sender.id, client_id)
                    .await?
            {
                return Ok(Sent {
                    message: existing.into(),
                    duplicate: true,
                    event: None,
                });
            }
            return Err(limited);
        }

        let row = message::Model {
            id: new_id(),
            room_id: input.room_id.clone(),
            seq: 0,
            user_id: sender.id.clone(),
            sender_name: sender.name.clone(),
            content,
            message_type: message_type.as_str().to_owned(),
            reply_to_id: input.reply_to_id.clone(),
            client_message_id: input.client_message_id.clone(),
            created_at: Utc::now(),
            edited_at: None,
            deleted: false,
        };
        match self.writes.insert_message(row, announce, queued).await {
            Ok(Committed {
                inserted: Inserted::Stored(stored),
                event,
            }) => Ok(Sent {
                message: stored.into(),
                duplicate: false,
                event,
            }),
            Ok(Committed {
                inserted: Inserted::Duplicate(existing),
                ..
            }) => Ok(Sent {
                message: existing.into(),
                duplicate: true,
                event: None,
            }),
            // A concurrent retry with the same client id (on another node) won the race between
            // the batch's lookup and its insert: answer with its message.
            Err(e) if is_unique_violation(&e) => {
                let client_id = input.client_message_id.as_deref().unwrap_or_default();
                match self
                    .find_by_client_id(&input.room_id, &sender.id, client_id)
                    .await?
                {
                    Some(existing) => Ok(Sent {
                        message: existing.into(),
                        duplicate: true,
                        event: None,
                    }),
                    None => Err(AppError::Internal(e.into())),
                }
            }
            Err(e) => Err(e.into()),
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
        // Whatever was stored before the search is found by it (see `search_index`).
        self.index_for_search().await?;
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

/// What one queued insert became.
#[derive(Debug)]
pub enum Inserted {
    /// Stored with the room's next seq.
    Stored(message::Model),
    /// A retry: the message already stored with the same room, sender and client message id.
    Duplicate(message::Model),
}

/// Inserts a batch of new messages in the caller's transaction: [`prepare_batch`], then its
/// statements.
pub async fn insert_batch(
    tx: &DatabaseTransaction,
    rows: Vec<message::Model>,
) -> Result<Vec<Result<Inserted, sea_orm::DbErr>>, sea_orm::DbErr> {
    let mut batch = prepare_batch(tx, rows).await?;
    crate::db::run_all(tx, batch.take_statements(tx.get_database_backend())).await?;
    Ok(batch.results)
}

/// A batch whose seqs are taken: what each message became once its writes run.
#[derive(Debug)]
pub struct PreparedBatch {
    /// In queue order; `Stored` rows carry their seq.
    pub results: Vec<Result<Inserted, sea_orm::DbErr>>,
    /// The rooms' counter moves as [`batch_sql::bump`] binds them; `None` when no message is
    /// new.
    pub bumps: Option<String>,
    /// The stored rows as [`batch_sql::insert`] binds them.
    pub messages: Option<String>,
    /// The senders' watermarks as [`batch_sql::watermarks`] binds them.
    pub watermarks: Option<String>,
}

impl PreparedBatch {
    /// The writes left (counters, rows, watermarks), taken out of the batch, to run before the
    /// commit; they return no rows, so a caller can run them with its own in one script
    /// ([`crate::db::run_all`]), or as one statement on PostgreSQL
    /// ([`batch_sql::commit_postgres`]).
    pub fn take_statements(&mut self, backend: DatabaseBackend) -> Vec<Statement> {
        let bump = self
            .bumps
            .take()
            .map(|moves| batch_sql::bump(backend, moves));
        let insert = self
            .messages
            .take()
            .map(|rows| batch_sql::insert(backend, rows));
        let marks = self
            .watermarks
            .take()
            .map(|marks| batch_sql::watermarks(backend, marks));
        bump.into_iter().chain(insert).chain(marks).collect()
    }
}

/// Takes the seqs of a batch of new messages in the caller's transaction, in queue order, and
/// returns what stores them. One statement whatever the batch size (on SQLite each statement
/// run on its own is a hand-off to sqlx's worker thread, on PostgreSQL a round trip, both of
/// which cost more than the work), of fixed text ([`batch_sql`]): [`batch_sql::front`] reads
/// the counters of the batch's rooms (on PostgreSQL locking them in id order, so concurrent
/// batches of several nodes cannot deadlock) and which client message ids are already stored
/// (retries). The messages of one room get consecutive seqs from its counter in queue order,
/// so they stay gapless and in each sender's order.
///
/// Returned to run, in one call with the journal's statements: the counters' moves, one
/// multi-row `INSERT` (its full-text trigger included), and one `UPDATE room_members … FROM`
/// moving each sender's watermarks to their last message (the sender has obviously seen
/// everything up to it).
///
/// An error fails the whole batch (the caller retries one message per transaction); a missing
/// room fails only its own messages, with `RecordNotFound`.
pub async fn prepare_batch(
    tx: &DatabaseTransaction,
    mut rows: Vec<message::Model>,
) -> Result<PreparedBatch, sea_orm::DbErr> {
    let backend = tx.get_database_backend();
    let mut results: Vec<Option<Result<Inserted, sea_orm::DbErr>>> =
        rows.iter().map(|_| None).collect();
    // For a repeat of an earlier message of the same batch: that message's index. Earlier in
    // the queue wins.
    let mut dup_of: Vec<Option<usize>> = vec![None; rows.len()];
    let mut first_of = std::collections::HashMap::new();
    for i in 0..rows.len() {
        if rows[i].client_message_id.is_some() {
            match first_of.entry(client_key(&rows[i])) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    dup_of[i] = Some(*first.get())
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
    }
    let candidates: Vec<usize> = (0..rows.len()).filter(|&i| dup_of[i].is_none()).collect();
    let keyed: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| rows[i].client_message_id.is_some())
        .collect();

    // 1. The rooms' counters and the retries, in one read.
    let mut last_seq: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut retries = Vec::new();
    {
        let mut rooms: Vec<&str> = candidates
            .iter()
            .map(|&i| rows[i].room_id.as_str())
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        let keys: Vec<(&str, &str, &str)> = keyed.iter().map(|&i| client_key(&rows[i])).collect();
        for row in tx
            .query_all_raw(batch_sql::front(backend, &rooms, &keys)?)
            .await?
        {
            let room: Option<String> = row.try_get_by_index(0)?;
            let value: i64 = row.try_get_by_index(1)?;
            match room {
                Some(room) => {
                    last_seq.insert(room, value);
                }
                None => retries.push(
                    usize::try_from(value)
                        .ok()
                        .and_then(|k| keyed.get(k).copied())
                        .ok_or_else(|| {
                            sea_orm::DbErr::Custom(format!("no key {value} in the batch"))
                        })?,
                ),
            }
        }
    }
    // Retries answer with the stored message: read only on this (rare) path.
    if !retries.is_empty() {
        let keys: Vec<(&str, &str, &str)> = retries.iter().map(|&i| client_key(&rows[i])).collect();
        let existing = message::Model::find_by_statement(batch_sql::lookup(backend, &keys)?)
            .all(tx)
            .await?;
        for &i in &retries {
            let key = client_key(&rows[i]);
            let found = existing
                .iter()
                .find(|m| client_key(m) == key)
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound("a retried message".into()))?;
            results[i] = Some(Ok(Inserted::Duplicate(found.clone())));
        }
    }

    // 2. Seqs, from each room's counter in queue order.
    let mut next = last_seq.clone();
    let mut stored = Vec::with_capacity(candidates.len());
    for &i in &candidates {
        if results[i].is_some() {
            continue;
        }
        match next.get_mut(&rows[i].room_id) {
            Some(seq) => {
                *seq += 1;
                rows[i].seq = *seq;
                stored.push(i);
            }
            None => {
                results[i] = Some(Err(sea_orm::DbErr::RecordNotFound("room".into())));
            }
        }
    }

    // 3. What stores them: the counters' moves, the rows, the senders' watermarks.
    let (mut bumps, mut messages, mut watermarks) = (None, None, None);
    if !stored.is_empty() {
        let moves: Vec<(&str, i64, i64)> = next
            .iter()
            .filter_map(|(room, &last)| {
                let read = last_seq.get(room).copied().unwrap_or(last);
                (last != read).then_some((room.as_str(), read, last))
            })
            .collect();
        bumps = Some(batch_sql::bump_rows(&moves)?);
        messages = Some(batch_sql::insert_rows(
            backend,
            stored.iter().map(|&i| &rows[i]),
        )?);
        let mut last_of: std::collections::BTreeMap<(&str, &str), i64> =
            std::collections::BTreeMap::new();
        for &i in &stored {
            let seq = last_of
                .entry((rows[i].room_id.as_str(), rows[i].user_id.as_str()))
                .or_default();
            *seq = (*seq).max(rows[i].seq);
        }
        let marks: Vec<(&str, &str, i64)> = last_of
            .into_iter()
            .map(|((room, user), seq)| (room, user, seq))
            .collect();
        watermarks = Some(batch_sql::watermark_rows(&marks)?);
    }

    // Repeats inside the batch answer like their first occurrence.
    for i in 0..rows.len() {
        if let Some(first) = dup_of[i] {
            results[i] = Some(match &results[first] {
                Some(Err(_)) => Err(sea_orm::DbErr::RecordNotFound("room".into())),
                Some(Ok(Inserted::Duplicate(existing))) => {
                    Ok(Inserted::Duplicate(existing.clone()))
                }
                _ => Ok(Inserted::Duplicate(rows[first].clone())),
            });
        }
    }
    let results = results
        .into_iter()
        .zip(rows)
        .map(|(result, row)| result.unwrap_or(Ok(Inserted::Stored(row))))
        .collect();
    Ok(PreparedBatch {
        results,
        bumps,
        messages,
        watermarks,
    })
}

/// The idempotency key of a message with a client message id.
fn client_key(m: &message::Model) -> (&str, &str, &str) {
    (
        m.room_id.as_str(),
        m.user_id.as_str(),
        m.client_message_id.as_deref().unwrap_or_default(),
    )
}
