//! Fan-out of membership changes, shared by REST (create, add, remove) and `chat:join`: tell
//! everyone (the pipeline's dispatcher moves live sockets on every node as it delivers the
//! change: added members join before it, removed ones leave after it), then deliver invites.

use std::sync::Arc;

use socketioxide::adapter::Adapter;

use super::emit::Emitter;
use crate::auth::AuthUser;
use crate::domain::chat::{Room, RoomChange, RoomType, group_invite};
use crate::domain::notifications::Notification;
use crate::state::Core;

/// Users joined `room` (by creation, invitation or joining a public room): their sockets join
/// the room on every node as the change is delivered, so no message sent after it is missed.
/// Users added to an existing group by someone else get a `group_invite` notification (a new
/// group's invites were committed with it and come through [`deliver_invites`]). Nothing here
/// fails: the change is committed, so an error answered now would only invite a retry.
pub async fn announce_added<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    room: &Room,
    added: &[String],
    actor: &AuthUser,
    change: RoomChange,
) {
    emitter.room_updated(room, change, added).await;
    let invited: Vec<String> = added.iter().filter(|u| **u != actor.id).cloned().collect();
    if change == RoomChange::Created || room.room_type != RoomType::Group || invited.is_empty() {
        return;
    }
    let invite = group_invite(&room.id, room.name.as_deref(), actor, invited);
    match core.notifications.create(&core.preferences, invite).await {
        Ok(created) => emitter.notifications(&created).await,
        Err(e) => {
            tracing::warn!(room = %room.id, error = ?e, "group invites not created");
        }
    }
}

/// Delivers invites that were committed with the change that made them (in-app delivery per
/// the recipients' preferences). Should the preferences be unreadable, the invites stay stored
/// and listed, and are not pushed.
pub async fn deliver_invites<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    invites: Vec<Notification>,
) {
    if invites.is_empty() {
        return;
    }
    match core.notifications.with_delivery(invites).await {
        Ok(created) => emitter.notifications(&created).await,
        Err(e) => tracing::warn!(error = ?e, "stored invites not delivered live"),
    }
}

/// Users left `room`: everyone, the removed included, is told; the removed users' sockets
/// leave the room on every node right after (see `pipeline::dispatcher`).
pub async fn announce_removed<A: Adapter>(
    emitter: &Emitter<'_, A>,
    room: &Room,
    removed: &[String],
) {
    emitter
        .room_updated(room, RoomChange::MemberRemoved, removed)
        .await;
}

/// After this node's adapter subscription came back (it may have missed cross-node moves while
/// away), makes each local socket's `chat:*` rooms follow the database: rooms of which its user
/// is no longer a member are left, rooms the user joined since the socket connected are joined.
/// Bounded work: one query per 500 users with sockets here.
pub async fn resync_local_rooms<A: Adapter>(io: &socketioxide::SocketIo<A>, core: &Core) {
    use std::collections::{HashMap, HashSet};
    let Some(ns) = io.of(super::NAMESPACE) else {
        return;
    };
    let mut by_user: HashMap<String, Vec<socketioxide::extract::SocketRef<A>>> = HashMap::new();
    for socket in ns.local().sockets() {
        if let Some(user) = socket.extensions.get::<AuthUser>() {
            by_user.entry(user.id).or_default().push(socket);
        }
    }
    let users: Vec<String> = by_user.keys().cloned().collect();
    let (mut left, mut joined) = (0usize, 0usize);
    for chunk in users.chunks(500) {
        let rows = match crate::domain::chat::memberships_of(&core.db, chunk).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "resyncing sockets' rooms failed");
                return;
            }
        };
        let mut member_of: HashMap<&str, HashMap<String, chrono::DateTime<chrono::Utc>>> =
            HashMap::new();
        for (user, room, joined_at) in &rows {
            member_of
                .entry(user.as_str())
                .or_default()
                .insert(super::rooms::chat(room), *joined_at);
        }
        for user in chunk {
            let rooms = member_of.remove(user.as_str()).unwrap_or_default();
            for socket in by_user.get(user).into_iter().flatten() {
                let current: HashSet<String> = socket
                    .rooms()
                    .into_iter()
                    .map(|r| r.to_string())
                    .filter(|r| r.starts_with("chat:"))
                    .collect();
                let stale: Vec<String> = current
                    .iter()
                    .filter(|r| !rooms.contains_key(*r))
                    .cloned()
                    .collect();
                // Rooms joined since the socket connected were moved into live (unless it left them
                // with `chat:leave`), so the resync may join them again.
                let since = socket
                    .extensions
                    .get::<Arc<super::order::Sequencer>>()
                    .map(|line| line.opened_at());
                let missing: Vec<String> = rooms
                    .iter()
                    .filter(|(room, at)| {
                        !current.contains(*room) && since.is_some_and(|s| **at >= s)
                    })
                    .map(|(room, _)| room.clone())
                    .collect();
                left += stale.len();
                joined += missing.len();
                if !stale.is_empty() {
                    let watches: Vec<String> = stale
                        .iter()
                        .filter_map(|r| r.strip_prefix("chat:"))
                        .map(super::rooms::presence_watch)
                        .collect();
                    socket.leave(stale);
                    socket.leave(watches);
                }
                if !missing.is_empty() {
                    socket.join(missing);
                }
            }
        }
    }
    tracing::info!(
        sockets_of_users = users.len(),
        left,
        joined,
        "sockets' chat rooms resynced after Redis came back"
    );
}

/// Runs [`resync_local_rooms`] each time the adapter's subscriptions are restored, until
/// shutdown.
pub async fn resync_on_resubscribe<A: Adapter>(
    io: socketioxide::SocketIo<A>,
    core: std::sync::Arc<Core>,
    resubscribed: std::sync::Arc<tokio::sync::Notify>,
) {
    tracing::info!(task = "room_resync", "started");
    loop {
        tokio::select! {
            () = resubscribed.notified() => resync_local_rooms(&io, &core).await,
            () = core.shutdown.cancelled() => break,
        }
    }
    tracing::info!(task = "room_resync", "stopped");
}
