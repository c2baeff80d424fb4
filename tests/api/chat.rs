//! `ChatService` on both backends: rooms and membership, the gapless per-room `seq` under
//! concurrency, idempotent sends, validation, receipts, history, search and room lists.

use std::collections::HashSet;
use std::fmt::Debug;

use entity::{message, room, room_member};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use switchboard::auth::AuthUser;
use switchboard::domain::chat::{
    HistoryQuery, Message, MessageType, NewMessage, NewRoom, Room, RoomType,
};
use switchboard::error::{AppError, AppResult, ErrorCode};

use crate::common::{Backend, TestApp, spawn_app, spawn_app_with, spawn_cluster};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn user(id: &str) -> AuthUser {
    AuthUser {
        id: id.to_owned(),
        name: format!("{id} name"),
        name_from_token: true,
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn text(room_id: &str, content: &str) -> NewMessage {
    NewMessage {
        room_id: room_id.to_owned(),
        content: content.to_owned(),
        message_type: None,
        reply_to_id: None,
        client_message_id: None,
    }
}

/// The error of a call that must fail, with its code checked.
#[track_caller]
fn expect_err<T: Debug>(result: AppResult<T>, code: ErrorCode) -> AppError {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(err) => {
            assert_eq!(err.code(), code, "unexpected error: {err:?}");
            err
        }
    }
}

/// The field names of an `INVALID_PAYLOAD` error (fails on any other error).
#[track_caller]
fn invalid_fields<T: Debug>(result: AppResult<T>) -> Vec<String> {
    match expect_err(result, ErrorCode::InvalidPayload) {
        AppError::InvalidPayload { details, .. } => details.into_iter().map(|d| d.field).collect(),
        other => unreachable!("{other:?}"),
    }
}

async fn direct(app: &TestApp, creator: &str, other: &str) -> AppResult<(Room, bool)> {
    app.core
        .chat
        .create_room(
            creator,
            NewRoom {
                participants: ids(&[other]),
                room_type: Some(RoomType::Direct),
                name: None,
            },
        )
        .await
}

async fn room_of(app: &TestApp, kind: RoomType, owner: &str, others: &[&str], name: &str) -> Room {
    let (room, created) = app
        .core
        .chat
        .create_room(
            owner,
            NewRoom {
                participants: ids(others),
                room_type: Some(kind),
                name: Some(name.to_owned()),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("creating {kind:?} room {name}: {e:?}"));
    assert!(created);
    room
}

async fn group(app: &TestApp, owner: &str, others: &[&str]) -> Room {
    room_of(app, RoomType::Group, owner, others, "the group").await
}

async fn send(app: &TestApp, sender: &str, room_id: &str, content: &str) -> Message {
    let sent = app
        .core
        .chat
        .send_message(&user(sender), text(room_id, content))
        .await
        .unwrap_or_else(|e| panic!("{sender} sending {content:?}: {e:?}"));
    assert!(!sent.duplicate);
    sent.message
}

async fn stored_messages(app: &TestApp, room_id: &str) -> u64 {
    message::Entity::find()
        .filter(message::Column::RoomId.eq(room_id))
        .count(&app.core.db)
        .await
        .expect("counting messages")
}

async fn member_row(app: &TestApp, room_id: &str, user_id: &str) -> room_member::Model {
    room_member::Entity::find_by_id((room_id.to_owned(), user_id.to_owned()))
        .one(&app.core.db)
        .await
        .expect("reading the member row")
        .unwrap_or_else(|| panic!("{user_id} is not a member of {room_id}"))
}

async fn last_seq(app: &TestApp, room_id: &str) -> i64 {
    room::Entity::find_by_id(room_id)
        .one(&app.core.db)
        .await
        .expect("reading the room")
        .expect("room exists")
        .last_seq
}

fn seqs(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

async fn direct_room_is_unique_per_pair(backend: Backend) {
    let app = spawn_app(backend).await;

    let (first, created) = direct(&app, "alice", "bob").await.unwrap();
    assert!(created);
    assert_eq!(first.room_type, RoomType::Direct);
    assert_eq!(first.name, None);
    assert_eq!(first.created_by, "alice");
    let roles: Vec<(&str, &str)> = first
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(roles.len(), 2, "{roles:?}");
    assert!(roles.contains(&("alice", "owner")), "{roles:?}");
    assert!(roles.contains(&("bob", "member")), "{roles:?}");

    let (again, created) = direct(&app, "alice", "bob").await.unwrap();
    assert!(!created, "a second create returns the existing room");
    assert_eq!(again.id, first.id);

    let (reverse, created) = direct(&app, "bob", "alice").await.unwrap();
    assert!(!created, "the other side gets the same room");
    assert_eq!(reverse.id, first.id);

    // One participant and no name also means a direct room.
    let (inferred, created) = app
        .core
        .chat
        .create_room(
            "bob",
            NewRoom {
                participants: ids(&["alice", "bob"]),
                room_type: None,
                name: None,
            },
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(inferred.id, first.id);

    let (other_pair, created) = direct(&app, "alice", "carol").await.unwrap();
    assert!(created);
    assert_ne!(other_pair.id, first.id);

    let directs = room::Entity::find()
        .filter(room::Column::RoomType.eq("direct"))
        .count(&app.core.db)
        .await
        .unwrap();
    assert_eq!(directs, 2);
}

async fn concurrent_direct_creation_makes_one_room(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut tasks = Vec::new();
    for (creator, other) in [
        ("alice", "bob"),
        ("bob", "alice"),
        ("alice", "bob"),
        ("bob", "alice"),
    ] {
        let core = app.core.clone();
        tasks.push(tokio::spawn(async move {
            core.chat
                .create_room(
                    creator,
                    NewRoom {
                        participants: ids(&[other]),
                        room_type: Some(RoomType::Direct),
                        name: None,
                    },
                )
                .await
        }));
    }
    let mut room_ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (room, was_created) = task
            .await
            .expect("task panicked")
            .expect("concurrent create_room");
        room_ids.insert(room.id);
        created += usize::from(was_created);
    }
    assert_eq!(room_ids.len(), 1, "one room for the pair: {room_ids:?}");
    assert_eq!(created, 1, "exactly one call created it");
    let rooms = room::Entity::find().count(&app.core.db).await.unwrap();
    assert_eq!(rooms, 1);
    let room_id = room_ids.into_iter().next().unwrap();
    let members = room_member::Entity::find()
        .filter(room_member::Column::RoomId.eq(room_id.as_str()))
        .count(&app.core.db)
        .await
        .unwrap();
    assert_eq!(members, 2);
}

async fn invalid_rooms_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let new = |participants: &[&str], room_type: Option<RoomType>, name: Option<&str>| NewRoom {
        participants: ids(participants),
        room_type,
        name: name.map(str::to_owned),
    };

    let none = chat
        .create_room("alice", new(&[], Some(RoomType::Direct), None))
        .await;
    assert_eq!(invalid_fields(none), ["participants"]);
    let only_self = chat
        .create_room("alice", new(&["alice"], Some(RoomType::Direct), None))
        .await;
    assert_eq!(invalid_fields(only_self), ["participants"]);
    let two = chat
        .create_room(
            "alice",
            new(&["bob", "carol"], Some(RoomType::Direct), None),
        )
        .await;
    assert_eq!(invalid_fields(two), ["participants"]);

    let unnamed_group = chat
        .create_room("alice", new(&["bob"], Some(RoomType::Group), None))
        .await;
    assert_eq!(invalid_fields(unnamed_group), ["name"]);
    let blank_name = chat
        .create_room(
            "alice",
            new(&["bob"], Some(RoomType::Group), Some(" \u{7} ")),
        )
        .await;
    assert_eq!(invalid_fields(blank_name), ["name"]);
    // Several participants and no type: a group, which needs a name.
    let inferred_group = chat
        .create_room("alice", new(&["bob", "carol"], None, None))
        .await;
    assert_eq!(invalid_fields(inferred_group), ["name"]);
    let unnamed_public = chat
        .create_room("alice", new(&[], Some(RoomType::Public), None))
        .await;
    assert_eq!(invalid_fields(unnamed_public), ["name"]);

    let rooms = room::Entity::find().count(&app.core.db).await.unwrap();
    assert_eq!(rooms, 0, "nothing was stored");
}

async fn creator_owns_a_group(backend: Backend) {
    let app = spawn_app(backend).await;
    let (room, created) = app
        .core
        .chat
        .create_room(
            "alice",
            NewRoom {
                // Duplicates and the creator themselves are dropped.
                participants: ids(&["bob", "carol", "bob", "alice"]),
                room_type: None,
                name: Some("  Team\u{1b}  ".to_owned()),
            },
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(room.room_type, RoomType::Group);
    assert_eq!(room.name.as_deref(), Some("Team"));
    assert_eq!(room.created_by, "alice");
    assert_eq!(room.last_seq, 0);
    let mut roles: Vec<(String, String)> = room
        .members
        .iter()
        .map(|m| (m.user_id.clone(), m.role.clone()))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("alice".to_owned(), "owner".to_owned()),
            ("bob".to_owned(), "member".to_owned()),
            ("carol".to_owned(), "member".to_owned()),
        ]
    );

    let seen_by_bob = app.core.chat.get_room("bob", &room.id).await.unwrap();
    assert_eq!(seen_by_bob.id, room.id);
    expect_err(
        app.core.chat.get_room("mallory", &room.id).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        app.core.chat.get_room("alice", "no-such-room").await,
        ErrorCode::NotFound,
    );

    let renamed = app
        .core
        .chat
        .rename_room("bob", &room.id, "Renamed")
        .await
        .unwrap();
    assert_eq!(renamed.name.as_deref(), Some("Renamed"));
    expect_err(
        app.core.chat.rename_room("mallory", &room.id, "x").await,
        ErrorCode::Forbidden,
    );
    let (dm, _) = direct(&app, "alice", "bob").await.unwrap();
    expect_err(
        app.core.chat.rename_room("alice", &dm.id, "x").await,
        ErrorCode::Conflict,
    );
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

async fn concurrent_senders_get_gapless_seqs(backend: Backend) {
    let app = spawn_app_with(backend, &["--rate-limit-per-minute", "100000"]).await;
    let senders: Vec<String> = (0..10).map(|i| format!("sender{i}")).collect();
    let others: Vec<&str> = senders[1..].iter().map(String::as_str).collect();
    let room = group(&app, &senders[0], &others).await;

    let mut tasks = Vec::new();
    for sender in &senders {
        let core = app.core.clone();
        let sender = user(sender);
        let room_id = room.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10 {
                let sent = core
                    .chat
                    .send_message(&sender, text(&room_id, &format!("{} #{i}", sender.id)))
                    .await
                    .expect("concurrent send");
                assert!(!sent.duplicate);
                got.push(sent.message);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.expect("sender task panicked");
        // One sender's messages are sequential, so their seqs increase.
        assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq), "{mine:?}");
        all.extend(mine);
    }
    let mut got = seqs(&all);
    got.sort_unstable();
    assert_eq!(got, (1..=100).collect::<Vec<i64>>());
    assert_eq!(last_seq(&app, &room.id).await, 100);
    assert_eq!(stored_messages(&app, &room.id).await, 100);

    let history = app
        .core
        .chat
        .history(&senders[0], &room.id, HistoryQuery::AfterSeq(0), 200)
        .await
        .unwrap();
    assert_eq!(seqs(&history.messages), (1..=100).collect::<Vec<i64>>());
    assert!(!history.has_more);
}

async fn client_message_id_makes_sends_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;
    let room = group(&app, "alice", &["bob"]).await;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let core = app.core.clone();
        let room_id = room.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut input = text(&room_id, "hello once");
            input.client_message_id = Some("cmid-1".to_owned());
            core.chat.send_message(&user("alice"), input).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task panicked").expect("idempotent send"));
    }
    let ids: HashSet<&str> = results.iter().map(|s| s.message.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every retry answers the same message");
    let originals = results.iter().filter(|s| !s.duplicate).count();
    assert_eq!(originals, 1, "exactly one send was not a duplicate");
    assert!(results.iter().all(|s| s.message.seq == 1));
    assert_eq!(stored_messages(&app, &room.id).await, 1);
    assert_eq!(last_seq(&app, &room.id).await, 1, "losers took no seq");

    // A later retry, even with other content, is the original.
    let mut retry = text(&room.id, "different text");
    retry.client_message_id = Some("cmid-1".to_owned());
    let again = app
        .core
        .chat
        .send_message(&user("alice"), retry)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.content, "hello once");
    assert_eq!(again.message.client_message_id.as_deref(), Some("cmid-1"));

    // The id is per user: bob's message with the same client id is his own.
    let mut bobs = text(&room.id, "bob's");
    bobs.client_message_id = Some("cmid-1".to_owned());
    let bob = app
        .core
        .chat
        .send_message(&user("bob"), bobs)
        .await
        .unwrap();
    assert!(!bob.duplicate);
    assert_eq!(bob.message.seq, 2);
    assert_eq!(stored_messages(&app, &room.id).await, 2);
}

async fn rejected_messages_take_no_seq(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &["--rate-limit-per-minute", "2", "--max-message-length", "10"],
    )
    .await;
    let room = group(&app, "alice", &["bob"]).await;
    let other = group(&app, "carol", &[]).await;
    let chat = &app.core.chat;

    let mut first = text(&room.id, "one");
    first.client_message_id = Some("c1".to_owned());
    let first = chat.send_message(&user("alice"), first).await.unwrap();
    assert_eq!(first.message.seq, 1);

    let empty = chat
        .send_message(&user("alice"), text(&room.id, " \n\t\u{0} "))
        .await;
    assert_eq!(invalid_fields(empty), ["message"]);
    let too_long = chat
        .send_message(&user("alice"), text(&room.id, "abcdefghijk"))
        .await;
    assert_eq!(invalid_fields(too_long), ["message"]);
    // Exactly the limit, counted in characters, is fine (and surrounding space is trimmed).
    assert_eq!(send(&app, "bob", &room.id, "  éééééééééé  ").await.seq, 2);
    expect_err(
        chat.send_message(&user("carol"), text(&room.id, "intruder"))
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.send_message(&user("alice"), text("no-such-room", "x"))
            .await,
        ErrorCode::NotFound,
    );
    let foreign_reply = send(&app, "carol", &other.id, "elsewhere").await;
    let mut reply = text(&room.id, "reply");
    reply.reply_to_id = Some(foreign_reply.id.clone());
    assert_eq!(
        invalid_fields(chat.send_message(&user("alice"), reply).await),
        ["replyToId"]
    );

    assert_eq!(send(&app, "alice", &room.id, "two").await.seq, 3);
    // alice used her 2 sends; the third is refused with a wait.
    let limited = expect_err(
        chat.send_message(&user("alice"), text(&room.id, "three"))
            .await,
        ErrorCode::RateLimited,
    );
    match limited {
        AppError::RateLimited { retry_after_ms } => {
            assert!(
                retry_after_ms > 0 && retry_after_ms <= 60_000,
                "{retry_after_ms}"
            );
        }
        other => unreachable!("{other:?}"),
    }
    // A retry of an already stored message is answered, not rate limited.
    let mut retry = text(&room.id, "one");
    retry.client_message_id = Some("c1".to_owned());
    let retried = chat.send_message(&user("alice"), retry).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.message.id, first.message.id);

    // bob's next message takes the seq right after the last stored one.
    assert_eq!(send(&app, "bob", &room.id, "next").await.seq, 4);
    assert_eq!(last_seq(&app, &room.id).await, 4);
    assert_eq!(stored_messages(&app, &room.id).await, 4);
}

async fn content_and_type_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let room = group(&app, "alice", &["bob"]).await;
    let chat = &app.core.chat;

    let cleaned = send(
        &app,
        "alice",
        &room.id,
        "\u{7} a\u{0}b\u{1b}c\nd\te <b>x</b>\r\u{7f} ",
    )
    .await;
    assert_eq!(cleaned.content, "abc\nd\te <b>x</b>");
    assert_eq!(cleaned.message_type, "text");
    assert_eq!(cleaned.sender_name, "alice name");
    assert_eq!(cleaned.room_id, room.id);
    assert!(!cleaned.deleted);

    let mut system = text(&room.id, "I am the server");
    system.message_type = Some(MessageType::System);
    assert_eq!(
        invalid_fields(chat.send_message(&user("alice"), system).await),
        ["type"]
    );
    let mut image = text(&room.id, "https://example.com/a.png");
    image.message_type = Some(MessageType::Image);
    let image = chat.send_message(&user("alice"), image).await.unwrap();
    assert_eq!(image.message.message_type, "image");

    let mut reply = text(&room.id, "answer");
    reply.reply_to_id = Some(cleaned.id.clone());
    let reply = chat.send_message(&user("bob"), reply).await.unwrap();
    assert_eq!(
        reply.message.reply_to_id.as_deref(),
        Some(cleaned.id.as_str())
    );

    let mut dangling = text(&room.id, "answer");
    dangling.reply_to_id = Some("no-such-message".to_owned());
    assert_eq!(
        invalid_fields(chat.send_message(&user("bob"), dangling).await),
        ["replyToId"]
    );
    assert_eq!(last_seq(&app, &room.id).await, 3);
}

// ---------------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------------

async fn membership_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &["bob", "carol"]).await;
    let (dm, _) = direct(&app, "alice", "bob").await.unwrap();

    expect_err(
        chat.add_members("alice", &dm.id, &ids(&["carol"])).await,
        ErrorCode::Conflict,
    );
    expect_err(
        chat.remove_member("alice", &dm.id, "bob").await,
        ErrorCode::Conflict,
    );
    expect_err(
        chat.add_members("mallory", &room.id, &ids(&["mallory"]))
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.add_members("alice", "no-such-room", &ids(&["dave"]))
            .await,
        ErrorCode::NotFound,
    );

    // Any member may add; already-members are not repeated; new members have nothing unread.
    send(&app, "alice", &room.id, "before dave").await;
    let change = chat
        .add_members("bob", &room.id, &ids(&["dave", "carol", "dave"]))
        .await
        .unwrap();
    assert_eq!(change.added, ["dave"]);
    assert!(change.room.is_member("dave"));
    let seen_by_dave = chat.get_room("dave", &room.id).await.unwrap();
    assert_eq!(seen_by_dave.unread_count, 0);
    assert_eq!(send(&app, "dave", &room.id, "hi all").await.seq, 2);

    // Only the owner removes others.
    expect_err(
        chat.remove_member("bob", &room.id, "carol").await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.remove_member("alice", &room.id, "mallory").await,
        ErrorCode::NotFound,
    );
    assert!(chat.get_room("carol", &room.id).await.is_ok());

    // Leaving is always allowed.
    let left = chat.remove_member("bob", &room.id, "bob").await.unwrap();
    assert_eq!(left.removed, ["bob"]);
    assert!(!left.room.is_member("bob"));
    expect_err(
        chat.send_message(&user("bob"), text(&room.id, "still here?"))
            .await,
        ErrorCode::Forbidden,
    );

    // carol's membership is cached by her send; removal must still take effect at once.
    send(&app, "carol", &room.id, "carol speaking").await;
    let removed = chat
        .remove_member("alice", &room.id, "carol")
        .await
        .unwrap();
    assert_eq!(removed.removed, ["carol"]);
    expect_err(
        chat.send_message(&user("carol"), text(&room.id, "let me in"))
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.history("carol", &room.id, HistoryQuery::Before(None), 10)
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.mark_read("carol", &room.id, 1).await,
        ErrorCode::Forbidden,
    );
    let room_now = chat.get_room("alice", &room.id).await.unwrap();
    let mut remaining: Vec<&str> = room_now.member_ids().collect();
    remaining.sort_unstable();
    assert_eq!(remaining, ["alice", "dave"]);
}

async fn public_rooms_can_be_joined(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let public = room_of(&app, RoomType::Public, "alice", &[], "lobby").await;
    let private = group(&app, "alice", &[]).await;
    send(&app, "alice", &public.id, "welcome").await;

    // Visible, but not writable before joining.
    assert_eq!(
        chat.get_room("bob", &public.id).await.unwrap().id,
        public.id
    );
    expect_err(
        chat.send_message(&user("bob"), text(&public.id, "hi"))
            .await,
        ErrorCode::Forbidden,
    );

    assert!(chat.join_public("bob", &public.id).await.unwrap());
    assert!(
        !chat.join_public("bob", &public.id).await.unwrap(),
        "joining twice adds nothing"
    );
    let room = chat.get_room("bob", &public.id).await.unwrap();
    assert!(room.is_member("bob"));
    assert_eq!(room.unread_count, 0, "joiners start with nothing unread");
    let bob_row = member_row(&app, &public.id, "bob").await;
    assert_eq!(bob_row.role, "member");
    assert_eq!(send(&app, "bob", &public.id, "hi").await.seq, 2);

    expect_err(
        chat.join_public("bob", &private.id).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.get_room("bob", &private.id).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.join_public("bob", "no-such-room").await,
        ErrorCode::NotFound,
    );
    // A member of a group "joins" it without error.
    assert!(!chat.join_public("alice", &private.id).await.unwrap());
}

/// Two nodes share one database; each `ChatService` caches membership. A member removed through
/// one node must not keep writing through the other.
async fn removal_reaches_other_nodes(backend: Backend) {
    let nodes = spawn_cluster(backend, 2, &[]).await;
    let (app, other_node) = (&nodes[0], &nodes[1].core.chat);
    let room = group(app, "alice", &["carol"]).await;
    // carol's socket lives on the other node, which now caches her membership.
    other_node
        .send_message(&user("carol"), text(&room.id, "from node 2"))
        .await
        .unwrap();

    app.core
        .chat
        .remove_member("alice", &room.id, "carol")
        .await
        .unwrap();

    // The invalidation travels over Redis pub/sub: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while other_node.require_member(&room.id, "carol").await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the other node still lets carol in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    expect_err(
        other_node
            .send_message(&user("carol"), text(&room.id, "still writing"))
            .await,
        ErrorCode::Forbidden,
    );
}

// ---------------------------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------------------------

async fn read_and_delivered_watermarks(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &["bob"]).await;
    for i in 1..=5 {
        send(&app, "alice", &room.id, &format!("m{i}")).await;
    }

    // The sender has read their own messages.
    assert_eq!(
        chat.get_room("alice", &room.id).await.unwrap().unread_count,
        0
    );
    assert_eq!(member_row(&app, &room.id, "alice").await.read_seq, 5);
    assert_eq!(
        chat.get_room("bob", &room.id).await.unwrap().unread_count,
        5
    );

    let read = chat.mark_read("bob", &room.id, 3).await.unwrap();
    assert_eq!(
        (read.up_to_seq, read.moved, read.unread_count),
        (3, true, 2)
    );
    assert_eq!(
        chat.get_room("bob", &room.id).await.unwrap().unread_count,
        2
    );
    let row = member_row(&app, &room.id, "bob").await;
    assert_eq!(row.read_seq, 3);
    assert!(row.read_at.is_some());
    assert_eq!(row.delivered_seq, 3, "reading implies delivery");

    let back = chat.mark_read("bob", &room.id, 1).await.unwrap();
    assert_eq!(
        (back.up_to_seq, back.moved, back.unread_count),
        (3, false, 2)
    );
    let same = chat.mark_read("bob", &room.id, 3).await.unwrap();
    assert!(!same.moved);
    let negative = chat.mark_read("bob", &room.id, -7).await.unwrap();
    assert_eq!(negative.up_to_seq, 3);
    assert_eq!(member_row(&app, &room.id, "bob").await.read_seq, 3);

    let beyond = chat.mark_read("bob", &room.id, 1_000).await.unwrap();
    assert_eq!(
        (beyond.up_to_seq, beyond.moved, beyond.unread_count),
        (5, true, 0)
    );
    assert_eq!(member_row(&app, &room.id, "bob").await.read_seq, 5);

    // bob's reply moves alice's delivered watermark only when she reports it.
    send(&app, "bob", &room.id, "reply 6").await;
    send(&app, "bob", &room.id, "reply 7").await;
    assert_eq!(
        chat.get_room("alice", &room.id).await.unwrap().unread_count,
        2
    );
    let delivered = chat.mark_delivered("alice", &room.id, 6).await.unwrap();
    assert_eq!((delivered.up_to_seq, delivered.moved), (6, true));
    let row = member_row(&app, &room.id, "alice").await;
    assert_eq!(
        (row.read_seq, row.delivered_seq),
        (5, 6),
        "delivery is not reading"
    );
    let older = chat.mark_delivered("alice", &room.id, 2).await.unwrap();
    assert_eq!((older.up_to_seq, older.moved), (6, false));
    let clamped = chat.mark_delivered("alice", &room.id, 99).await.unwrap();
    assert_eq!(clamped.up_to_seq, 7);
    assert_eq!(member_row(&app, &room.id, "alice").await.delivered_seq, 7);
    assert_eq!(
        chat.get_room("alice", &room.id).await.unwrap().unread_count,
        2
    );

    expect_err(
        chat.mark_read("mallory", &room.id, 1).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.mark_delivered("bob", "no-such-room", 1).await,
        ErrorCode::NotFound,
    );
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

async fn history_pages_and_catch_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &["bob"]).await;
    let mut sent = Vec::new();
    for i in 1..=7 {
        let sender = if i % 2 == 0 { "bob" } else { "alice" };
        sent.push(send(&app, sender, &room.id, &format!("message {i}")).await);
    }

    // Newest first, pages of 3, no gaps or repeats, no cursor after the last page.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = chat
            .history("bob", &room.id, HistoryQuery::Before(cursor.as_deref()), 3)
            .await
            .unwrap();
        pages.push(seqs(&page.messages));
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), page.messages.last().map(|m| &m.id));
                cursor = Some(next);
            }
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end: {pages:?}");
    }
    assert_eq!(pages, [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);

    // A page that ends exactly at the first message has no next cursor.
    let page = chat
        .history("bob", &room.id, HistoryQuery::Before(Some(&sent[6].id)), 6)
        .await
        .unwrap();
    assert_eq!(seqs(&page.messages), [6, 5, 4, 3, 2, 1]);
    assert_eq!(page.next_cursor, None);
    assert!(!page.has_more);

    let after = chat
        .history("bob", &room.id, HistoryQuery::AfterSeq(2), 3)
        .await
        .unwrap();
    assert_eq!(seqs(&after.messages), [3, 4, 5]);
    assert!(after.has_more);
    assert_eq!(after.messages[0].content, "message 3");
    let rest = chat
        .history("bob", &room.id, HistoryQuery::AfterSeq(5), 3)
        .await
        .unwrap();
    assert_eq!(seqs(&rest.messages), [6, 7]);
    assert!(!rest.has_more);
    let none = chat
        .history("bob", &room.id, HistoryQuery::AfterSeq(7), 3)
        .await
        .unwrap();
    assert!(none.messages.is_empty());
    assert!(!none.has_more);

    let other = group(&app, "bob", &[]).await;
    let foreign = send(&app, "bob", &other.id, "elsewhere").await;
    assert_eq!(
        invalid_fields(
            chat.history("bob", &room.id, HistoryQuery::Before(Some(&foreign.id)), 3)
                .await
        ),
        ["before"]
    );
    expect_err(
        chat.history("mallory", &room.id, HistoryQuery::AfterSeq(0), 3)
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.history("bob", "no-such-room", HistoryQuery::AfterSeq(0), 3)
            .await,
        ErrorCode::NotFound,
    );
}

async fn edit_and_delete_own_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &["bob"]).await;
    let first = send(&app, "alice", &room.id, "first").await;
    let second = send(&app, "alice", &room.id, "second").await;
    let bobs = send(&app, "bob", &room.id, "bob's").await;

    let edited = chat
        .edit_message("alice", &room.id, &first.id, " first, fixed\u{7} ")
        .await
        .unwrap();
    assert_eq!(edited.content, "first, fixed");
    assert_eq!(edited.seq, 1);
    assert!(edited.edited_at.is_some());
    assert_eq!(
        invalid_fields(chat.edit_message("alice", &room.id, &first.id, "  ").await),
        ["message"]
    );

    expect_err(
        chat.edit_message("alice", &room.id, &bobs.id, "mine now")
            .await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.delete_message("alice", &room.id, &bobs.id).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.edit_message("alice", &room.id, "no-such-message", "x")
            .await,
        ErrorCode::NotFound,
    );
    let other = group(&app, "alice", &[]).await;
    expect_err(
        chat.delete_message("alice", &other.id, &first.id).await,
        ErrorCode::NotFound,
    );

    let deleted = chat
        .delete_message("alice", &room.id, &second.id)
        .await
        .unwrap();
    assert!(deleted.deleted);
    assert_eq!(deleted.content, "");
    assert_eq!(deleted.seq, 2);
    let again = chat
        .delete_message("alice", &room.id, &second.id)
        .await
        .unwrap();
    assert!(again.deleted, "deleting twice is harmless");
    expect_err(
        chat.edit_message("alice", &room.id, &second.id, "back")
            .await,
        ErrorCode::Conflict,
    );

    let history = chat
        .history("bob", &room.id, HistoryQuery::AfterSeq(0), 10)
        .await
        .unwrap();
    assert_eq!(
        seqs(&history.messages),
        [1, 2, 3],
        "a deleted message keeps its seq"
    );
    let gone = &history.messages[1];
    assert_eq!(gone.id, second.id);
    assert!(gone.deleted);
    assert_eq!(gone.content, "");
    assert_eq!(history.messages[0].content, "first, fixed");
    assert!(!history.messages[0].deleted);
    // The text is gone from storage too, not just hidden.
    let row = message::Entity::find_by_id(second.id.as_str())
        .one(&app.core.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.content, "");
    assert_eq!(last_seq(&app, &room.id).await, 3);
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

async fn search_finds_words_in_the_members_room(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &["bob"]).await;
    let other = group(&app, "carol", &["alice"]).await;

    let hello = send(&app, "alice", &room.id, "Hello, wonderful world!").await;
    send(&app, "bob", &room.id, "nothing to see").await;
    let secret = send(&app, "bob", &room.id, "the wonderful secret").await;
    let later = send(&app, "alice", &room.id, "another wonderful day").await;
    send(&app, "carol", &other.id, "wonderful elsewhere").await;

    let found = chat.search("bob", &room.id, "wonderful", 10).await.unwrap();
    let found_ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        found_ids,
        [later.id.as_str(), secret.id.as_str(), hello.id.as_str()],
        "newest first, this room only"
    );
    let limited = chat.search("bob", &room.id, "wonderful", 2).await.unwrap();
    assert_eq!(limited.len(), 2);

    let case = chat.search("bob", &room.id, "HELLO", 10).await.unwrap();
    assert_eq!(case.len(), 1);
    assert_eq!(case[0].id, hello.id);
    let both = chat
        .search("bob", &room.id, "wonderful secret", 10)
        .await
        .unwrap();
    assert_eq!(both.len(), 1, "every word must match");
    assert_eq!(both[0].id, secret.id);
    assert!(
        chat.search("bob", &room.id, "absent", 10)
            .await
            .unwrap()
            .is_empty()
    );

    chat.delete_message("bob", &room.id, &secret.id)
        .await
        .unwrap();
    let after_delete = chat.search("bob", &room.id, "secret", 10).await.unwrap();
    assert!(after_delete.is_empty(), "{after_delete:?}");
    chat.edit_message("alice", &room.id, &later.id, "another day")
        .await
        .unwrap();
    let after_edit = chat.search("bob", &room.id, "wonderful", 10).await.unwrap();
    assert_eq!(
        after_edit.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [hello.id.as_str()],
        "edited text is searched, not the old one"
    );

    expect_err(
        chat.search("mallory", &room.id, "wonderful", 10).await,
        ErrorCode::Forbidden,
    );
    expect_err(
        chat.search("bob", "no-such-room", "wonderful", 10).await,
        ErrorCode::NotFound,
    );
    assert_eq!(
        invalid_fields(chat.search("bob", &room.id, "  \t ", 10).await),
        ["q"]
    );
}

async fn search_text_is_never_query_syntax(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let room = group(&app, "alice", &[]).await;
    let hit = send(&app, "alice", &room.id, "foo bar").await;
    send(&app, "alice", &room.id, "a b c").await;

    for query in [
        "\"foo",
        "foo\"",
        "\"",
        "a OR b*",
        "foo*",
        "*",
        "NOT foo",
        "foo AND",
        "(foo",
        "NEAR(foo bar)",
        "content:foo",
        "-foo",
        "^foo",
        "foo & | ! bar",
        "'foo'",
        "foo:*",
        "{foo}",
    ] {
        let result = chat.search("alice", &room.id, query, 10).await;
        assert!(result.is_ok(), "searching {query:?}: {result:?}");
    }
    // Quotes around a word still find it.
    let quoted = chat.search("alice", &room.id, "\"foo\"", 10).await.unwrap();
    assert_eq!(quoted.iter().map(|m| &m.id).collect::<Vec<_>>(), [&hit.id]);
}

// ---------------------------------------------------------------------------------------------
// Room lists
// ---------------------------------------------------------------------------------------------

async fn list_rooms_with_last_message_unread_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let busy = group(&app, "alice", &["bob"]).await;
    let mine = group(&app, "alice", &["bob"]).await;
    let quiet = group(&app, "alice", &[]).await;
    let (dm, _) = direct(&app, "bob", "alice").await.unwrap();
    let public = room_of(&app, RoomType::Public, "alice", &[], "lobby").await;
    let not_mine = group(&app, "bob", &["carol"]).await;
    send(&app, "bob", &not_mine.id, "private").await;

    for i in 1..=3 {
        send(&app, "bob", &busy.id, &format!("busy {i}")).await;
    }
    chat.mark_read("alice", &busy.id, 1).await.unwrap();
    send(&app, "bob", &mine.id, "from bob").await;
    send(&app, "alice", &mine.id, "alice answers").await;
    send(&app, "bob", &dm.id, "psst").await;

    let all = chat.list_rooms("alice", 50, None).await.unwrap();
    assert_eq!(all.next_cursor, None);
    let listed: Vec<&str> = all.items.iter().map(|r| r.id.as_str()).collect();
    let mut expected = vec![
        busy.id.as_str(),
        mine.id.as_str(),
        quiet.id.as_str(),
        dm.id.as_str(),
        public.id.as_str(),
    ];
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed, expected, "alice's rooms, newest first");

    let find = |id: &str| all.items.iter().find(|r| r.id == id).unwrap();
    let busy_room = find(&busy.id);
    assert_eq!(busy_room.unread_count, 2);
    let last = busy_room
        .last_message
        .clone()
        .flatten()
        .expect("last message");
    assert_eq!((last.seq, last.content.as_str()), (3, "busy 3"));
    let mine_room = find(&mine.id);
    assert_eq!(mine_room.unread_count, 0, "her own reply read everything");
    let last = mine_room
        .last_message
        .clone()
        .flatten()
        .expect("last message");
    assert_eq!((last.user_id.as_str(), last.seq), ("alice", 2));
    let dm_room = find(&dm.id);
    assert_eq!(dm_room.unread_count, 1);
    assert_eq!(
        dm_room.last_message.clone().flatten().map(|m| m.content),
        Some("psst".to_owned())
    );
    let quiet_room = find(&quiet.id);
    assert_eq!(quiet_room.unread_count, 0);
    assert!(
        matches!(quiet_room.last_message, Some(None)),
        "listed rooms always say whether there is a last message"
    );
    assert_eq!(find(&public.id).members.len(), 1);

    // bob sees his own counts, not alice's.
    let bobs = chat.list_rooms("bob", 50, None).await.unwrap();
    let bob_busy = bobs.items.iter().find(|r| r.id == busy.id).unwrap();
    assert_eq!(bob_busy.unread_count, 0);
    assert_eq!(bobs.items.len(), 4);

    // Pages of 2: 2 + 2 + 1, in order, without repeats.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = chat
            .list_rooms("alice", 2, cursor.as_deref())
            .await
            .unwrap();
        sizes.push(page.items.len());
        paged.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(|r| &r.id));
                cursor = Some(next);
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end: {sizes:?}");
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(paged, expected);
    let exact = chat.list_rooms("alice", 5, None).await.unwrap();
    assert_eq!(exact.items.len(), 5);
    assert_eq!(
        exact.next_cursor, None,
        "no cursor when the page holds the rest"
    );
    assert!(
        chat.list_rooms("nobody", 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

backend_tests!(
    direct_room_is_unique_per_pair,
    concurrent_direct_creation_makes_one_room,
    invalid_rooms_are_refused,
    creator_owns_a_group,
    concurrent_senders_get_gapless_seqs,
    client_message_id_makes_sends_idempotent,
    rejected_messages_take_no_seq,
    content_and_type_are_validated,
    membership_rules,
    public_rooms_can_be_joined,
    read_and_delivered_watermarks,
    history_pages_and_catch_up,
    edit_and_delete_own_messages,
    search_finds_words_in_the_members_room,
    search_text_is_never_query_syntax,
    list_rooms_with_last_message_unread_and_pages,
);

mod cross_node {
    use super::*;

    #[tokio::test]
    async fn sqlite_removal_reaches_other_nodes() {
        removal_reaches_other_nodes(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_removal_reaches_other_nodes() {
        if crate::common::skip_postgres() {
            return;
        }
        removal_reaches_other_nodes(Backend::Postgres).await;
    }
}
