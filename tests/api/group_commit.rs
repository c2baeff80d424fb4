//! Group commit of chat messages (issue 14): messages queued while a commit runs share the next
//! transaction, and still every room's seq is gapless, every sender's messages keep their order,
//! retries answer with the original, watermarks move, a message whose caller gave up before its
//! batch started is not stored, and one failing message does not fail its batch.

use std::collections::HashMap;
use std::time::Duration;

use entity::{message, room, room_member};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use switchboard::domain::chat::NewMessage;

use serde_json::json;

use crate::common::socket::PollingSocket;
use crate::common::{Backend, TestApp, group, spawn_app_with, user};

fn text(room_id: &str, content: String, client_id: Option<String>) -> NewMessage {
    NewMessage {
        room_id: room_id.to_owned(),
        content,
        message_type: None,
        reply_to_id: None,
        client_message_id: client_id,
    }
}

async fn stored(app: &TestApp, room_id: &str) -> Vec<message::Model> {
    message::Entity::find()
        .filter(message::Column::RoomId.eq(room_id))
        .order_by_asc(message::Column::Seq)
        .all(&app.core.db)
        .await
        .expect("reading messages")
}

/// Waits (bounded) until `n` message inserts are queued behind the held turn.
async fn until_queued(app: &TestApp, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.core.writes.queued_messages() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} inserts never queued"));
}

const ROOMS: usize = 6;
const PER_ROOM: usize = 3;
const EACH: usize = 12;

async fn batches_across_rooms_keep_every_guarantee(backend: Backend) {
    let app = spawn_app_with(backend, &["--rate-limit-per-minute", "100000"]).await;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let members: Vec<String> = (0..PER_ROOM).map(|i| format!("gc{r}-{i}")).collect();
        rooms.push((group(&app, &members[0], &members[1..]).await, members));
    }
    let mut tasks = Vec::new();
    for (room_id, members) in &rooms {
        for member in members {
            let core = app.core.clone();
            let (room_id, sender) = (room_id.clone(), user(member));
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..EACH {
                    // Every third message carries a client id, and is retried at once.
                    let client_id = (i % 3 == 0).then(|| format!("{}-{i}", sender.id));
                    let input = text(&room_id, format!("{} #{i}", sender.id), client_id.clone());
                    let sent = core.chat.send_message(&sender, input).await.expect("send");
                    assert!(!sent.duplicate, "a first send is no duplicate");
                    if let Some(id) = client_id {
                        let retry = text(&room_id, "retried".into(), Some(id));
                        let again = core.chat.send_message(&sender, retry).await.expect("retry");
                        assert!(again.duplicate, "a retry is a duplicate");
                        assert_eq!(again.message.id, sent.message.id);
                        assert_eq!(again.message.seq, sent.message.seq);
                    }
                    mine.push(sent.message.seq);
                }
                (room_id, sender.id, mine)
            }));
        }
    }
    let mut per_room: HashMap<String, Vec<i64>> = HashMap::new();
    let mut last_of: HashMap<(String, String), i64> = HashMap::new();
    for task in tasks {
        let (room_id, sender, mine) = task.await.expect("sender panicked");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{sender}: {mine:?}");
        last_of.insert((room_id.clone(), sender), *mine.last().unwrap_or(&0));
        per_room.entry(room_id).or_default().extend(mine);
    }
    let expected: Vec<i64> = (1..=(PER_ROOM * EACH) as i64).collect();
    for (room_id, members) in &rooms {
        let mut seqs = per_room.remove(room_id).unwrap_or_default();
        seqs.sort_unstable();
        assert_eq!(seqs, expected, "acked seqs of {room_id}");
        let rows = stored(&app, room_id).await;
        assert_eq!(
            rows.iter().map(|m| m.seq).collect::<Vec<_>>(),
            expected,
            "stored seqs of {room_id}: retries stored nothing and took no seq"
        );
        let room = room::Entity::find_by_id(room_id.as_str())
            .one(&app.core.db)
            .await
            .expect("reading the room")
            .expect("the room");
        assert_eq!(room.last_seq, (PER_ROOM * EACH) as i64);
        for member in members {
            let row = room_member::Entity::find_by_id((room_id.clone(), member.clone()))
                .one(&app.core.db)
                .await
                .expect("reading the member")
                .expect("the member");
            let last = last_of[&(room_id.clone(), member.clone())];
            assert!(
                row.read_seq >= last,
                "{member} read up to their own last message"
            );
        }
    }
}

/// SQLite only: there, holding the write turn holds back every message batch.
#[tokio::test]
async fn sqlite_an_abandoned_send_is_not_stored_and_a_bad_one_fails_alone() {
    let app = spawn_app_with(Backend::Sqlite, &["--rate-limit-per-minute", "100000"]).await;
    let members = vec!["gc-b".to_owned()];
    let room_a = group(&app, "gc-a", &members).await;
    let room_b = group(&app, "gc-a", &members).await;

    // A caller that gives up while queued: its message is never stored.
    let turn = app.core.writes.turn().await.expect("the turn");
    let abandoned = tokio::spawn({
        let core = app.core.clone();
        let room_a = room_a.clone();
        async move {
            let input = text(&room_a, "never stored".into(), None);
            core.chat.send_message(&user("gc-a"), input).await
        }
    });
    until_queued(&app, 1).await;
    abandoned.abort();
    assert!(abandoned.await.is_err_and(|e| e.is_cancelled()));

    // Two more queue up; room B disappears before their batch runs.
    let mut sends = Vec::new();
    for room_id in [&room_a, &room_b] {
        let core = app.core.clone();
        let room_id = room_id.clone();
        sends.push(tokio::spawn(async move {
            let input = text(&room_id, "queued".into(), None);
            core.chat.send_message(&user("gc-b"), input).await
        }));
    }
    until_queued(&app, 3).await;
    turn.execute_unprepared(&format!("DELETE FROM rooms WHERE id = '{room_b}'"))
        .await
        .expect("deleting room B");
    drop(turn);

    let to_b = sends.pop().expect("two sends");
    let to_a = sends.pop().expect("two sends");
    let sent = to_a.await.expect("send to A").expect("room A's message");
    assert_eq!(sent.message.seq, 1, "the abandoned message took no seq");
    assert!(to_b.await.expect("send to B").is_err(), "room B is gone");
    let rows = stored(&app, &room_a).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].content, "queued");
    assert_eq!(app.core.writes.queued_messages(), 0);
}

/// SQLite only (its turn holds batches back): one batch holding a retry of a stored message,
/// a new message, a repeat of that new message and a repeat of the retry answers the retries
/// and the repeats with the stored messages, and stores one row with the next seq.
#[tokio::test]
async fn sqlite_a_batch_answers_retries_and_repeats_with_the_stored_message() {
    let app = spawn_app_with(Backend::Sqlite, &["--rate-limit-per-minute", "100000"]).await;
    let room_id = group(&app, "gc-r", &["gc-s".to_owned()]).await;
    let send = |content: &str, client_id: &str| {
        let core = app.core.clone();
        let input = text(&room_id, content.to_owned(), Some(client_id.to_owned()));
        async move { core.chat.send_message(&user("gc-s"), input).await }
    };
    let first = send("first", "c-1").await.expect("the first message");

    let turn = app.core.writes.turn().await.expect("the turn");
    let queued = [
        ("first again", "c-1"),
        ("second", "c-2"),
        ("second again", "c-2"),
        ("first once more", "c-1"),
    ];
    let mut sends = Vec::new();
    for (n, (content, client_id)) in queued.into_iter().enumerate() {
        sends.push(tokio::spawn(send(content, client_id)));
        // In this order in the batch.
        until_queued(&app, n + 1).await;
    }
    drop(turn);
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.expect("a send").expect("an answer"));
    }
    let [retry, second, repeat, retry_again] = answers.as_slice() else {
        panic!("four answers");
    };
    assert!(retry.duplicate && retry.message.id == first.message.id);
    assert_eq!(retry.message.seq, 1);
    assert!(!second.duplicate);
    assert_eq!(second.message.seq, 2);
    assert!(repeat.duplicate && repeat.message.id == second.message.id);
    assert_eq!(repeat.message.seq, 2);
    assert!(retry_again.duplicate && retry_again.message.id == first.message.id);
    assert_eq!(retry_again.message.content, "first");
    let rows = stored(&app, &room_id).await;
    let contents: Vec<&str> = rows.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["first", "second"]);
}

/// A batched row reads back as it was given, and its dates are stored exactly as sea-orm stores
/// the same dates (SQLite keeps them as text: a different spelling of the same instant would
/// compare and sort wrongly against rows written by the rest of the code).
async fn a_batched_row_is_stored_as_sea_orm_stores_it(backend: Backend) {
    use chrono::TimeZone;
    use sea_orm::ActiveModelTrait;

    let app = spawn_app_with(backend, &[]).await;
    let room_id = group(&app, "rt-a", &["rt-b".to_owned()]).await;
    // Nanoseconds: SQLite keeps all nine digits, PostgreSQL truncates to microseconds.
    let created = chrono::Utc
        .timestamp_opt(1_700_000_000, 123_456_789)
        .single()
        .expect("a date");
    let edited = created + chrono::Duration::milliseconds(1500);
    let model = |id: &str, seq: i64, client_id: Option<&str>| message::Model {
        id: id.to_owned(),
        room_id: room_id.clone(),
        seq,
        user_id: "rt-a".to_owned(),
        sender_name: "Rt \"A\" ünïcode".to_owned(),
        content: "line\nwith 'quotes', \\ and \u{1F600}".to_owned(),
        message_type: "text".to_owned(),
        reply_to_id: client_id.map(|_| "reference".to_owned()),
        client_message_id: client_id.map(str::to_owned),
        created_at: created,
        edited_at: Some(edited),
        deleted: false,
    };
    message::ActiveModel::from(model("reference", 1000, None))
        .insert(&app.core.db)
        .await
        .expect("the reference row");

    // On the write path, as every write: a transaction on a pooled reader would race the
    // writer connection (the search indexer writes in the background).
    let tx = app.core.writes.begin().await.expect("a transaction");
    let given = model("batched", 0, Some("rt-client"));
    let results = switchboard::domain::chat::insert_batch(&tx, vec![given.clone()])
        .await
        .expect("the batch");
    tx.commit().await.expect("commit");
    let [Ok(switchboard::domain::chat::Inserted::Stored(_))] = results.as_slice() else {
        panic!("the row was not stored: {results:?}");
    };

    let read = |id: &'static str| {
        let db = app.core.db.clone();
        async move {
            message::Entity::find_by_id(id)
                .one(&db)
                .await
                .expect("reading")
                .expect("the row")
        }
    };
    let (batched, reference) = (read("batched").await, read("reference").await);
    assert_eq!(batched.seq, 1, "the room's first seq");
    // The dates as the backend keeps them (PostgreSQL: microseconds), the rest as given.
    let expected = message::Model {
        seq: 1,
        created_at: reference.created_at,
        edited_at: reference.edited_at,
        ..given
    };
    assert_eq!(batched, expected);
    for column in ["created_at", "edited_at"] {
        let same = app
            .core
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                app.core.db.get_database_backend(),
                format!(
                    "SELECT COUNT(*) AS n FROM messages WHERE {column} = \
                     (SELECT {column} FROM messages WHERE id = 'reference')"
                ),
            ))
            .await
            .expect("comparing")
            .expect("a count");
        let n: i64 = same.try_get("", "n").expect("n");
        assert_eq!(n, 2, "{column} is stored as sea-orm stores it");
    }
}

backend_tests!(
    batches_across_rooms_keep_every_guarantee,
    a_message_is_stored_only_with_its_announcement,
    a_batched_row_is_stored_as_sea_orm_stores_it
);

/// The events journaled for a room's messages: `(event name, message id)` in journal order.
async fn journaled_messages(app: &TestApp) -> Vec<(String, String)> {
    let backend = app.core.db.get_database_backend();
    let rows = app
        .core
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT event, payload FROM events ORDER BY id",
        ))
        .await
        .expect("reading the journal");
    rows.iter()
        .filter_map(|row| {
            let name: String = row.try_get("", "event").ok()?;
            let payload: String = row.try_get("", "payload").ok()?;
            let payload: serde_json::Value = serde_json::from_str(&payload).ok()?;
            let id = payload["message"]["id"].as_str()?.to_owned();
            Some((name, id))
        })
        .collect()
}

/// A message and its `chat:new_message` are one transaction: stored and journaled, or
/// neither. When they were two commits a message could be stored and never announced (a
/// crash in between; the client's retry, answered as a duplicate, announced nothing either):
/// here the journal is broken on purpose, and the message must fail rather than be stored
/// unannounced.
async fn a_message_is_stored_only_with_its_announcement(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let room_id = group(&app, "an-a", &["an-b".to_owned()]).await;
    let send = |content: &'static str, client_id: &'static str| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/realtime/chat/rooms/{room_id}/messages")))
            .bearer_auth(app.token("an-a"))
            .json(&serde_json::json!({ "message": content, "clientMessageId": client_id }));
        async move {
            let response = request.send().await.expect("sending");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };

    let (status, first) = send("announced", "c1").await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_str().expect("a message id").to_owned();
    assert_eq!(
        journaled_messages(&app).await,
        [("chat:new_message".to_owned(), first_id.clone())]
    );
    // A retry is answered with the original and journals nothing more.
    let (status, again) = send("announced", "c1").await;
    assert_eq!((status, again["id"].as_str()), (200, Some(&*first_id)));
    assert_eq!(journaled_messages(&app).await.len(), 1);

    app.core
        .db
        .execute_unprepared("DELETE FROM event_head")
        .await
        .expect("breaking the journal");
    let (status, body) = send("never announced", "c2").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    let rows = stored(&app, &room_id).await;
    assert_eq!(rows.len(), 1, "the unannounced message was stored");
    let room = room::Entity::find_by_id(room_id.as_str())
        .one(&app.core.db)
        .await
        .expect("reading the room")
        .expect("the room");
    assert_eq!(room.last_seq, 1, "the failed message took no seq");
}

/// SQLite only (its turn holds batches back): a socket's `chat:message`s sent back to back all
/// queue for one group commit instead of each waiting for the previous one's commit, and still
/// take seqs in the order the socket sent them; an event of another kind sent after them
/// (`chat:sync`) waits until they are stored, so it sees them.
#[tokio::test]
async fn sqlite_one_sockets_messages_queue_together_and_later_events_see_them() {
    let app = spawn_app_with(Backend::Sqlite, &["--rate-limit-per-minute", "100000"]).await;
    let room_id = group(&app, "gc-p", &["gc-q".to_owned()]).await;
    let (mut socket, _) = PollingSocket::connect(&app.address, &app.token("gc-p"))
        .await
        .expect("connecting");

    let turn = app.core.writes.turn().await.expect("the turn");
    let mut acks = Vec::new();
    for i in 0..3 {
        let message = json!({ "roomId": room_id, "message": format!("m{i}") });
        acks.push(socket.emit_asking_ack("chat:message", message).await);
    }
    // Without the hand-over only the first would queue; the others would wait for its commit.
    until_queued(&app, 3).await;
    let sync = json!({ "roomId": room_id, "afterSeq": 0 });
    let sync = socket.emit_asking_ack("chat:sync", sync).await;
    drop(turn);

    for (i, id) in acks.into_iter().enumerate() {
        let ack = socket.ack(id).await;
        assert_eq!(ack["ok"], true, "{ack}");
        assert_eq!(ack["message"]["content"], format!("m{i}"));
        assert_eq!(
            ack["message"]["seq"],
            i as i64 + 1,
            "seqs in the order sent: {ack}"
        );
    }
    let synced = socket.ack(sync).await;
    let contents: Vec<&str> = synced["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        ["m0", "m1", "m2"],
        "the sync came after the messages: {synced}"
    );
    socket.close().await;
}
