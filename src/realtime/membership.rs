//! Fan-out of membership changes, shared by REST (create, add, remove) and `chat:join`:
//! move live sockets first, then tell everyone, then deliver invites.

use socketioxide::adapter::Adapter;

use super::emit::Emitter;
use crate::auth::AuthUser;
use crate::domain::chat::{Room, RoomChange, RoomType, group_invite};
use crate::domain::notifications::Notification;
use crate::state::Core;

/// Users joined `room` (by creation, invitation or joining a public room): their sockets join
/// the room on every node before anyone is told, so no message sent after the change is missed.
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
    // A new room's members are the creator and `added` (a big room's object lists only some).
    let mut joining = added.to_vec();
    if change == RoomChange::Created && !joining.contains(&actor.id) {
        joining.push(actor.id.clone());
    }
    emitter.join_room(&joining, &room.id).await;
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

/// Users left `room`: everyone, the removed included, is told first; then the removed users'
/// sockets leave the room on every node.
pub async fn announce_removed<A: Adapter>(
    emitter: &Emitter<'_, A>,
    room: &Room,
    removed: &[String],
) {
    emitter
        .room_updated(room, RoomChange::MemberRemoved, removed)
        .await;
    emitter.leave_room(removed, &room.id).await;
}

/// Room moves (sockets joining or leaving `chat:{roomId}` on other nodes) that could not reach
/// the cluster, to retry once Redis answers. Kept per room as the set of users concerned, not
/// as join/leave operations: a retry looks up who is a member *now*, so a user removed and
/// re-added during the outage ends where the database says, whatever order things happened in.
#[derive(Default)]
pub struct PendingMoves {
    rooms: std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>,
    wake: tokio::sync::Notify,
}

/// Rooms with a pending move beyond this are dropped (with an error in the log): the bound
/// keeps an endless outage from growing memory without limit.
const MAX_PENDING_ROOMS: usize = 10_000;

impl PendingMoves {
    /// Queues `users`' sockets in `room_id` for a cluster-wide retry.
    pub fn push(&self, room_id: &str, users: &[String]) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= MAX_PENDING_ROOMS && !rooms.contains_key(room_id) {
            tracing::error!(
                room = room_id,
                "too many rooms with pending cross-node moves; dropping this one"
            );
            return;
        }
        rooms
            .entry(room_id.to_owned())
            .or_default()
            .extend(users.iter().cloned());
        drop(rooms);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<(String, Vec<String>)> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .drain()
            .map(|(room, users)| (room, users.into_iter().collect()))
            .collect()
    }

    /// How many rooms wait for a retry.
    pub fn len(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Retries the pending room moves whenever the cluster is reachable, until shutdown: each
/// user's sockets end up in `chat:{roomId}` on every node exactly when the user is a member.
pub async fn retry_moves<A: Adapter>(io: socketioxide::SocketIo<A>, core: std::sync::Arc<Core>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "room_move_retry", "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.room_moves.wake.notified() => {}
            () = core.shutdown.cancelled() => break,
        }
        if core.room_moves.is_empty() || !core.cluster_reachable() {
            continue;
        }
        let Some(ns) = io.of(super::NAMESPACE) else {
            continue;
        };
        for (room_id, users) in core.room_moves.take() {
            let members = match crate::domain::chat::members_among(&core.db, &room_id, &users).await
            {
                Ok(members) => members,
                Err(e) => {
                    tracing::warn!(room = %room_id, error = %e, "pending room move: membership lookup failed");
                    core.room_moves.push(&room_id, &users);
                    continue;
                }
            };
            let (joining, leaving): (Vec<String>, Vec<String>) =
                users.iter().cloned().partition(|u| members.contains(u));
            let mut failed = false;
            for (targets, join) in [(joining, true), (leaving, false)] {
                if targets.is_empty() {
                    continue;
                }
                let targets: Vec<String> = targets.iter().map(|u| super::rooms::user(u)).collect();
                let ops = ns.clone().to(targets);
                let result = if join {
                    ops.join(super::rooms::chat(&room_id)).await
                } else {
                    // Former members stop watching the room's presence too.
                    ops.leave(vec![
                        super::rooms::chat(&room_id),
                        super::rooms::presence_watch(&room_id),
                    ])
                    .await
                };
                if let Err(e) = result {
                    tracing::debug!(room = %room_id, error = ?e, "pending room move failed again");
                    failed = true;
                }
            }
            if failed {
                core.room_moves.push(&room_id, &users);
            } else {
                tracing::info!(room = %room_id, users = users.len(), "pending room move done cluster-wide");
            }
        }
    }
    tracing::info!(task = "room_move_retry", "stopped");
}

/// When a socket finished connecting: rooms its user joined later are rooms it was moved into
/// live (unless it left them with `chat:leave`), so a resync may join them again.
#[derive(Clone, Copy, Debug)]
pub struct ConnectedAt(pub chrono::DateTime<chrono::Utc>);

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
                let since = socket.extensions.get::<ConnectedAt>();
                let missing: Vec<String> = rooms
                    .iter()
                    .filter(|(room, at)| {
                        !current.contains(*room) && since.is_some_and(|s| **at >= s.0)
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
