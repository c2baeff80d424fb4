//! What a client can do besides sending messages — typing, read and delivered watermarks,
//! choosing a presence status — as one function each, called by the Socket.IO event handlers
//! and by their REST twins (`/api/v1/realtime/chat/rooms/:roomId/{typing,read,delivered}`,
//! `PUT /presence/status`), so both transports have the same effects on everyone else.

use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;

use super::emit::Emitter;
use crate::domain::presence::Status;
use crate::error::AppResult;
use crate::state::Core;

/// `chat:typing`: shows (throttled, per the user's `shareTyping`) or clears the user's typing
/// state in the room. The emitter decides who hears it; typing never reaches the typer's own
/// sockets and sessions.
pub async fn typing<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    user_id: &str,
    room_id: &str,
    is_typing: bool,
) -> AppResult<()> {
    core.chat.require_member(room_id, user_id).await?;
    if is_typing {
        let outcome = core.typing.start(user_id, room_id, Instant::now());
        // The preference is read only when something would be shown (at most once per
        // throttle window); typing state exists only for what was shown, so the automatic
        // and explicit `false` need no check of their own. The automatic `false` is sent by
        // the typing sweeper (`tasks`).
        if outcome.forward {
            if !core.preferences.get(user_id).await?.share_typing {
                core.typing.stop(user_id, room_id);
                return Ok(());
            }
            emitter.typing(room_id, user_id, true).await;
        }
    } else if core.typing.stop(user_id, room_id) {
        emitter.typing(room_id, user_id, false).await;
    }
    Ok(())
}

/// `chat:read`: moves the user's read watermark and tells the room (or, without shared
/// receipts, the user's other devices). Returns the user's unread count in the room.
pub async fn read<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    user_id: &str,
    room_id: &str,
    up_to_seq: i64,
) -> AppResult<i64> {
    let mark = core.chat.mark_read(user_id, room_id, up_to_seq).await?;
    if mark.moved {
        let shared = core.preferences.get(user_id).await?.share_read_receipts;
        emitter.messages_read(room_id, user_id, &mark, shared).await;
    }
    Ok(mark.unread_count)
}

/// `chat:delivered`: moves the user's delivered watermark and tells the room.
pub async fn delivered<A: Adapter>(
    emitter: &Emitter<'_, A>,
    core: &Core,
    user_id: &str,
    room_id: &str,
    up_to_seq: i64,
) -> AppResult<()> {
    let mark = core
        .chat
        .mark_delivered(user_id, room_id, up_to_seq)
        .await?;
    if mark.moved {
        emitter.messages_delivered(room_id, user_id, &mark).await;
    }
    Ok(())
}

/// The statuses a user may choose (`offline` is not a choice: it follows from disconnecting).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChosenStatus {
    Online,
    Away,
    Busy,
}

/// `presence:status`: stores the chosen status and queues its announcement.
pub async fn set_status(core: &Core, user_id: &str, chosen: ChosenStatus) -> AppResult<()> {
    let status = match chosen {
        ChosenStatus::Online => Status::Online,
        ChosenStatus::Away => Status::Away,
        ChosenStatus::Busy => Status::Busy,
    };
    if let Some(status) = core
        .presence
        .store
        .set_status(user_id, status, Utc::now())
        .await?
    {
        super::presence::queue_status(core, user_id, status).await;
    }
    Ok(())
}
