//! Fan-out of membership changes, shared by REST (create, add, remove) and `chat:join`:
//! move live sockets first, then tell everyone, then create invites.

use socketioxide::adapter::Adapter;

use super::emit::Emitter;
use crate::auth::AuthUser;
use crate::domain::chat::{Room, RoomChange, RoomType};
use crate::domain::notifications::NewNotification;
use crate::error::AppResult;
use crate::state::Core;

/// Users joined `room` (by creation, invitation or joining a public room): their sockets join
/// the room on every node before anyone is told, so no message sent after the change is missed.
/// Users added to a group by someone else get a `group_invite` notification.
pub async fn announce_added<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    room: &Room,
    added: &[String],
    actor: &AuthUser,
    change: RoomChange,
) -> AppResult<()> {
    // A new room's members are the creator and `added` (a big room's object lists only some).
    let mut joining = added.to_vec();
    if change == RoomChange::Created && !joining.contains(&actor.id) {
        joining.push(actor.id.clone());
    }
    emitter.join_room(&joining, &room.id).await;
    emitter.room_updated(room, change, added).await;
    let invited: Vec<String> = added.iter().filter(|u| **u != actor.id).cloned().collect();
    if room.room_type == RoomType::Group && !invited.is_empty() {
        let room_name = room.name.clone().unwrap_or_else(|| "a group".to_owned());
        let invite = NewNotification {
            user_ids: invited,
            notification_type: "group_invite".to_owned(),
            title: format!("Added to {room_name}"),
            message: format!("{} added you to {room_name}", actor.name),
            data: serde_json::json!({ "roomId": room.id, "roomName": room.name }),
            priority: "normal".to_owned(),
            actor_id: Some(actor.id.clone()),
            expires_at: None,
            dedup_key: None,
        };
        let created = core.notifications.create(&core.preferences, invite).await?;
        emitter.notifications(&created).await;
    }
    Ok(())
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
