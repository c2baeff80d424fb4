//! Fan-out of membership changes, shared by REST (create, add, remove) and `chat:join`:
//! move live sockets first, then tell everyone, then deliver invites.

use socketioxide::adapter::Adapter;

use super::emit::Emitter;
use crate::auth::AuthUser;
use crate::domain::chat::{Room, RoomChange, RoomType, group_invite};
use crate::domain::notifications::{Notification, with_delivery};
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
    let joining: Vec<String> = match change {
        RoomChange::Created => room.member_ids().map(str::to_owned).collect(),
        _ => added.to_vec(),
    };
    emitter.join_room(&joining, &room.id).await;
    emitter.room_updated(room, change, &[]).await;
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
    match with_delivery(&core.preferences, invites).await {
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
