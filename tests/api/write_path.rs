//! Every write takes the one write path (issue 8, "SQLite writers"). With SQLite's busy timeout
//! at 0, two of this process's writers meeting inside SQLite fail at once with "database is
//! locked"; queued on the write path they never meet, so a mixed concurrent load succeeds.

use serde_json::json;
use switchboard::auth::AuthUser;
use switchboard::domain::chat::{NewMessage, NewRoom, RoomType};
use switchboard::domain::feed::{Audience, NewActivity};
use switchboard::domain::notifications::NewNotification;
use switchboard::domain::{follows, users};

use crate::common::{Backend, TestApp, count, group, send_text, spawn_app_with, user};

const SERVICE_KEY: &str = "service-key-for-the-write-path-test-0";
const USERS: usize = 48;
const ROUNDS: usize = 16;

fn id(i: usize) -> String {
    format!("writer-{i}")
}

/// One write of the mix, chosen by `op`, as user `i`; the error text if it failed.
async fn write_once(app: &TestApp, room_id: &str, i: usize, op: usize) -> Result<(), String> {
    let me = id(i);
    let other = id((i + 1) % USERS);
    let core = &app.core;
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what} by {me}: {e}");
    match op {
        // A socket connect: the profile upsert from the token's name claim, or without one.
        0 => {
            let claim = format!("{me} name");
            users::sign_in(
                &core.writes,
                &core.db,
                &me,
                i.is_multiple_of(2).then_some(&*claim),
            )
            .await
            .map(drop)
            .map_err(|e| failed("connect upsert", &e))
        }
        1 => {
            let sender = AuthUser {
                id: me.clone(),
                name: me.clone(),
                name_from_token: false,
            };
            let message = NewMessage {
                room_id: room_id.to_owned(),
                content: format!("hello from {me}"),
                message_type: None,
                reply_to_id: None,
                client_message_id: None,
            };
            core.chat
                .send_message(&sender, message)
                .await
                .map(drop)
                .map_err(|e| failed("message", &e))
        }
        2 => {
            core.chat
                .mark_delivered(&me, room_id, i64::MAX)
                .await
                .map_err(|e| failed("delivered receipt", &e))?;
            core.chat
                .mark_read(&me, room_id, i64::MAX)
                .await
                .map(drop)
                .map_err(|e| failed("read receipt", &e))
        }
        3 => {
            let input = NewNotification {
                user_ids: vec![me.clone(), other.clone()],
                notification_type: "mention".into(),
                title: "t".into(),
                message: "m".into(),
                data: json!({}),
                priority: "normal".into(),
                actor_id: Some(other.clone()),
                expires_at: None,
                dedup_key: Some(format!("k-{op}-{i}")),
            };
            core.notifications
                .create(&core.preferences, input)
                .await
                .map(drop)
                .map_err(|e| failed("notification", &e))
        }
        4 => core
            .notifications
            .mark_read(&me, None)
            .await
            .map(drop)
            .map_err(|e| failed("notifications read", &e)),
        // Preferences and a message over REST.
        5 => {
            let res = app
                .client
                .put(app.url("/api/v1/realtime/notifications/preferences"))
                .bearer_auth(app.token(&me))
                .json(&json!({ "preferences": { "shareTyping": i.is_multiple_of(2) } }))
                .send()
                .await
                .map_err(|e| failed("preferences request", &e))?;
            expect_success(res, "preferences", &me).await?;
            let res = app
                .client
                .post(app.url(&format!("/api/v1/realtime/chat/rooms/{room_id}/messages")))
                .bearer_auth(app.token(&me))
                .json(&json!({ "message": "over REST" }))
                .send()
                .await
                .map_err(|e| failed("message request", &e))?;
            expect_success(res, "REST message", &me).await
        }
        // A follow over the service API, an unfollow through the service.
        6 => {
            let res = app
                .client
                .put(app.url("/api/v1/internal/follows"))
                .header("x-api-key", SERVICE_KEY)
                .json(&json!({ "followerId": me, "followeeId": other }))
                .send()
                .await
                .map_err(|e| failed("follow request", &e))?;
            expect_success(res, "follow", &me).await?;
            follows::unfollow(&core.writes, &me, &id((i + 2) % USERS))
                .await
                .map(drop)
                .map_err(|e| failed("unfollow", &e))
        }
        _ => {
            core.feed
                .publish(NewActivity {
                    activity_type: "post".into(),
                    actor_id: me.clone(),
                    target_id: format!("post-{i}"),
                    target_type: "post".into(),
                    content: Some("c".into()),
                    metadata: None,
                    audience: Audience::Followers,
                })
                .await
                .map_err(|e| failed("feed activity", &e))?;
            core.presence
                .record_last_seen(&me, chrono::Utc::now())
                .await
                .map_err(|e| failed("last seen", &e))
        }
    }
}

async fn expect_success(res: reqwest::Response, what: &str, who: &str) -> Result<(), String> {
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let body = res.text().await.unwrap_or_default();
    Err(format!("{what} by {who}: {status} {body}"))
}

async fn mixed_writes_all_succeed_without_busy_waits(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            "--sqlite-busy-timeout-ms",
            "0",
            "--service-api-key",
            SERVICE_KEY,
            "--rate-limit-per-minute",
            "100000",
        ],
    )
    .await;
    let (room, _) = app
        .core
        .chat
        .create_room(
            &id(0),
            NewRoom {
                participants: (1..USERS).map(id).collect(),
                room_type: Some(RoomType::Group),
                name: Some("writers".into()),
            },
        )
        .await
        .expect("creating the room");

    let app = std::sync::Arc::new(app);
    let tasks = (0..USERS).map(|i| {
        let app = app.clone();
        let room_id = room.id.clone();
        tokio::spawn(async move {
            let (app, room_id) = (&*app, room_id.as_str());
            let mut errors = Vec::new();
            for round in 0..ROUNDS {
                if let Err(e) = write_once(app, room_id, i, (i + round) % 8).await {
                    errors.push(e);
                }
            }
            errors
        })
    });
    let errors: Vec<String> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|joined| joined.unwrap_or_else(|e| vec![format!("task panicked: {e}")]))
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} writes failed, e.g. {:?}",
        errors.len(),
        USERS * ROUNDS,
        &errors[..errors.len().min(5)]
    );
    // Each user sent one message per op 1 and per op 5 round; every seq was taken once.
    let sends = (0..USERS)
        .flat_map(|i| (0..ROUNDS).map(move |r| (i + r) % 8))
        .filter(|op| *op == 1 || *op == 5)
        .count() as i64;
    let room = app.core.chat.load_room(&room.id).await.expect("room");
    assert_eq!(room.last_seq, sends);
}

/// On a multi-threaded runtime, so that the writers really run at the same time.
mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mixed_writes_all_succeed_without_busy_waits() {
        super::mixed_writes_all_succeed_without_busy_waits(crate::common::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mixed_writes_all_succeed_without_busy_waits() {
        if crate::common::skip_postgres() {
            return;
        }
        super::mixed_writes_all_succeed_without_busy_waits(crate::common::Backend::Postgres).await;
    }
}

/// A receipt that moves nothing (repeated, or behind the member's watermark) takes no turn of
/// the write path: a client looping `chat:read` must not queue ahead of everyone's messages.
/// The test holds the turn itself; a write would wait for it, a no-op answers at once.
#[tokio::test]
async fn receipts_that_move_nothing_take_no_write_turn() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let chat = &app.core.chat;
    let room_id = group(&app, "reader", &["writer".to_owned()]).await;
    let writer = user("writer");
    for i in 0..3 {
        let message = NewMessage {
            room_id: room_id.clone(),
            content: format!("message {i}"),
            message_type: None,
            reply_to_id: None,
            client_message_id: None,
        };
        chat.send_message(&writer, message)
            .await
            .expect("sending a message");
    }
    let first = chat
        .mark_read("reader", &room_id, 2)
        .await
        .expect("reading");
    assert!(first.moved);
    assert_eq!(first.unread_count, 1);

    let held = app.core.writes.turn().await.expect("taking the write turn");
    let within = std::time::Duration::from_secs(5);
    for (what, up_to) in [("the same read", 2), ("an older read", 1)] {
        let again = tokio::time::timeout(within, chat.mark_read("reader", &room_id, up_to))
            .await
            .unwrap_or_else(|_| panic!("{what} waited for the write turn"))
            .expect("reading again");
        assert!(!again.moved, "{what}");
        assert_eq!((again.up_to_seq, again.unread_count), (2, 1), "{what}");
    }
    let delivered = tokio::time::timeout(within, chat.mark_delivered("reader", &room_id, 2))
        .await
        .expect("a delivered receipt behind the read one waited for the write turn")
        .expect("delivered");
    assert!(!delivered.moved);
    drop(held);

    // One that moves still writes.
    let last = chat
        .mark_read("reader", &room_id, 3)
        .await
        .expect("reading on");
    assert!(last.moved);
    assert_eq!((last.up_to_seq, last.unread_count), (3, 0));
}

/// A returning user whose profile already matches the token connects without a turn of the
/// write path, so a reconnect avalanche after a deploy does not queue on the SQLite writer. The
/// test holds the turn itself; a write would wait for it.
#[tokio::test]
async fn a_returning_user_signs_in_without_a_write_turn() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let core = &app.core;
    let sign_in =
        |claim: Option<&'static str>| users::sign_in(&core.writes, &core.db, "ann", claim);
    assert_eq!(sign_in(Some("Ann")).await.expect("first sign-in"), "Ann");

    let held = core.writes.turn().await.expect("taking the write turn");
    let within = std::time::Duration::from_secs(5);
    for claim in [Some("Ann"), None] {
        let name = tokio::time::timeout(within, sign_in(claim))
            .await
            .unwrap_or_else(|_| panic!("signing in with {claim:?} waited for the write turn"))
            .expect("signing in again");
        assert_eq!(name, "Ann", "claim {claim:?}");
    }
    drop(held);

    // A new name still writes.
    assert_eq!(sign_in(Some("Annie")).await.expect("renamed"), "Annie");
    let stored = users::stored_name(&core.db, "ann").await.expect("reading");
    assert_eq!(stored.as_deref(), Some("Annie"));
}

/// Every SQLite write runs on one connection of its own (`db::writer`): whatever turn it is,
/// the connection has the writer's settings, which no pooled reader has.
#[tokio::test]
async fn sqlite_writes_run_on_the_writer_connection() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let pragma = |db: &sea_orm::DatabaseConnection, name: &str| {
        let db = db.clone();
        let sql = format!("PRAGMA {name}");
        async move {
            let row = db
                .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
                .await
                .expect("reading a pragma")
                .expect("a pragma row");
            row.try_get_by_index::<i64>(0).expect("an integer pragma")
        }
    };
    for _ in 0..3 {
        let turn = app.core.writes.turn().await.expect("taking the write turn");
        // 2 = MEMORY: statement journals of multi-row writes never touch a temporary file.
        assert_eq!(pragma(&turn, "temp_store").await, 2);
        assert_eq!(pragma(&turn, "cache_size").await, -16 * 1024);
        // The background checkpointer does the work; SQLite's own is a safety net.
        assert_eq!(pragma(&turn, "wal_autocheckpoint").await, 8_000);
    }
    assert_eq!(
        pragma(&app.core.db, "temp_store").await,
        0,
        "a pooled reader"
    );
}

/// With `SQLITE_CHECKPOINT_INTERVAL_MS`, what the writer commits reaches the database file in
/// the background: the file grows although no commit crossed SQLite's own threshold (with
/// the checkpointer off it stays in the WAL, and this test times out).
#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            "--sqlite-checkpoint-interval-ms",
            "20",
            "--rate-limit-per-minute",
            "100000",
        ],
    )
    .await;
    let file = switchboard::sqlite_url::parse(&app.core.config.database_url)
        .expect("the URL")
        .file
        .expect("a database file");
    let file_len = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let core = &app.core;
    let room_id = group(&app, "cp-0", &["cp-1".to_owned()]).await;
    // Wait for the checkpointer to catch up with the setup, so growth below is the messages'.
    let settled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut last = file_len();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = file_len();
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the file settles");
    let cp_0 = user("cp-0");
    // About 120 KiB of content, stored twice (row and journal): well past the 100 KiB the file
    // must grow by, in about 500 WAL frames, below even SQLite's own threshold of 1,000.
    for i in 0..40 {
        core.chat
            .send_message(
                &cp_0,
                NewMessage {
                    room_id: room_id.clone(),
                    content: format!("{i} {}", "x".repeat(3000)),
                    message_type: None,
                    reply_to_id: None,
                    client_message_id: None,
                },
            )
            .await
            .expect("sending");
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while file_len() < settled + 100 * 1024 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the database file stayed at {} bytes (from {settled}): nothing was checkpointed",
            file_len()
        )
    });
}

const PENDING: &str = "SELECT count(*) FROM messages WHERE search_id IS NULL";
const INDEXED: &str = "SELECT count(*) FROM messages_fts";

/// A message's commit leaves SQLite's full-text index alone (its row is marked pending), and
/// the next search indexes it first, with whatever its content is by then: an edit or a delete
/// of a message not yet indexed must neither break the index nor leave the old words findable.
#[tokio::test]
async fn sqlite_search_indexes_after_the_commit_and_finds_what_was_sent_before() {
    let app = spawn_app_with(Backend::Sqlite, &["--search-index-interval-ms", "0"]).await;
    let chat = &app.core.chat;
    let room_id = group(&app, "fts-0", &["fts-1".to_owned()]).await;
    let kept = send_text(&app, "fts-0", &room_id, "plain apple").await.id;
    let edited = send_text(&app, "fts-0", &room_id, "apple banana").await.id;
    let deleted = send_text(&app, "fts-1", &room_id, "apple cherry").await.id;
    assert_eq!(count(&app, PENDING).await, 3, "indexed in the commit");
    assert_eq!(count(&app, INDEXED).await, 0);

    chat.edit_message("fts-0", &room_id, &edited, "durian")
        .await
        .expect("editing a pending message");
    chat.delete_message("fts-1", &room_id, &deleted)
        .await
        .expect("deleting a pending message");
    let room = room_id.as_str();
    let found = |q: &'static str| async move {
        chat.search("fts-1", room, q, 10)
            .await
            .expect("searching")
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found("apple").await,
        [kept.as_str()],
        "old words of an edit"
    );
    assert_eq!(count(&app, PENDING).await, 0, "the search indexed them");
    assert_eq!(found("durian").await, [edited.as_str()]);
    assert!(found("cherry").await.is_empty(), "a deleted message");

    // Once indexed, edits go through the index's triggers.
    chat.edit_message("fts-0", &room_id, &kept, "plain elder")
        .await
        .expect("editing an indexed message");
    assert!(found("apple").await.is_empty());
    assert_eq!(found("elder").await, [kept.as_str()]);
    let integrity = sea_orm::ConnectionTrait::execute_unprepared(
        &app.core.db,
        "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)",
    )
    .await;
    assert!(
        integrity.is_ok(),
        "the index matches the rows: {integrity:?}"
    );
}

/// Without any search, `SEARCH_INDEX_INTERVAL_MS` indexes what was sent (with it at 0, this
/// times out).
#[tokio::test]
async fn sqlite_the_search_index_catches_up_in_the_background() {
    let app = spawn_app_with(Backend::Sqlite, &["--search-index-interval-ms", "20"]).await;
    let room_id = group(&app, "bg-0", &["bg-1".to_owned()]).await;
    send_text(&app, "bg-0", &room_id, "fig grape").await;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while count(&app, PENDING).await > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the indexer indexed the message");
    assert_eq!(count(&app, INDEXED).await, 1);
}

/// A search with nothing left to index takes no write turn: the test holds the turn, and the
/// search must not wait for it.
#[tokio::test]
async fn sqlite_a_search_with_nothing_to_index_takes_no_write_turn() {
    let app = spawn_app_with(Backend::Sqlite, &["--search-index-interval-ms", "0"]).await;
    let room_id = group(&app, "st-0", &["st-1".to_owned()]).await;
    let sent = send_text(&app, "st-0", &room_id, "kiwi").await.id;
    let search = || app.core.chat.search("st-1", &room_id, "kiwi", 10);
    assert_eq!(search().await.expect("the first search").len(), 1);

    let held = app.core.writes.turn().await.expect("taking the write turn");
    let found = tokio::time::timeout(std::time::Duration::from_secs(5), search())
        .await
        .expect("the search waited for the write turn")
        .expect("searching again");
    drop(held);
    assert_eq!(found.first().map(|m| m.id.as_str()), Some(sent.as_str()));
}

/// Two nodes on one SQLite file (as the cluster tests run them): one keeps indexing for search
/// while the other stores messages from several senders at once. Each node's write turn only
/// orders its own writes; a transaction that began as a reader and then found the file written
/// by the other node failed at once ("database is locked", never waiting), so messages failed
/// whenever the other node's indexer committed between a batch's first read and its writes.
#[tokio::test]
async fn sqlite_two_nodes_on_one_file_write_while_the_other_indexes() {
    let nodes = crate::common::spawn_cluster(
        Backend::Sqlite,
        2,
        &[
            "--search-index-interval-ms",
            "1",
            "--rate-limit-per-minute",
            "100000",
        ],
    )
    .await;
    let room_id = group(&nodes[0], "two-0", &["two-1".to_owned()]).await;
    let mut senders = Vec::new();
    for s in 0..4 {
        let core = nodes[0].core.clone();
        let room_id = room_id.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..50 {
                core.chat
                    .send_message(
                        &user("two-0"),
                        NewMessage {
                            room_id: room_id.clone(),
                            content: format!("sender {s} message {i}"),
                            message_type: None,
                            reply_to_id: None,
                            client_message_id: None,
                        },
                    )
                    .await
                    .map_err(|e| format!("sender {s}, message {i}: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for sender in senders {
        sender
            .await
            .expect("a sender task")
            .expect("every message stored");
    }
}
