//! Presence of one chat room's members: the member sidebar (`GET …/presence`, the snapshot in
//! the `presence:watch` ack) and its online count, and the bookkeeping that coalesces count
//! updates. Only members see it, whatever the room type: a public room's member list is not
//! a directory of who is online for strangers. Members hiding their online status appear
//! offline with no `lastSeen` and are not counted.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::domain::chat::ChatService;
use crate::domain::preferences::PreferenceService;
use crate::error::AppResult;

use super::{PresenceService, PresenceView, Status};

/// Users looked up in one presence-store round trip when counting a large room.
const COUNT_CHUNK: usize = 1000;

/// Rooms whose last announced count is remembered; past this the memory starts over (the cost
/// is at most one repeated count per room).
const MAX_REMEMBERED_COUNTS: usize = 10_000;

/// A page of a room's member presence, ordered by user id.
#[derive(Debug)]
pub struct RoomPresencePage {
    /// Members online (any status but offline) who share their status, in the whole room.
    pub online: u64,
    pub items: Vec<PresenceView>,
    /// The last user id of this page when there are more.
    pub next_cursor: Option<String>,
}

/// The presence of a room's members as `viewer` (a member) sees it: `limit` members after
/// `after`, by user id, and the online count of the whole room.
pub async fn room_presence(
    chat: &ChatService,
    presence: &PresenceService,
    prefs: &PreferenceService,
    viewer: &str,
    room_id: &str,
    limit: u64,
    after: Option<&str>,
) -> AppResult<RoomPresencePage> {
    let access = chat.require_member(room_id, viewer).await?;
    let mut members: Vec<String> = access.members.iter().cloned().collect();
    members.sort();
    let online = online_count(presence, prefs, &members).await?;
    let start = after.map_or(0, |a| members.partition_point(|m| m.as_str() <= a));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let page: Vec<String> = members.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < members.len();
    let items = presence.view(prefs, viewer, &page).await?;
    Ok(RoomPresencePage {
        online,
        next_cursor: if has_more { page.last().cloned() } else { None },
        items,
    })
}

/// How many of `members` are online (online, away or busy) and share their status.
pub async fn online_count(
    presence: &PresenceService,
    prefs: &PreferenceService,
    members: &[String],
) -> AppResult<u64> {
    let mut online = 0;
    for chunk in members.chunks(COUNT_CHUNK) {
        let live: Vec<String> = presence
            .store
            .get_many(chunk)
            .await?
            .into_iter()
            .filter(|(_, l)| l.status != Status::Offline)
            .map(|(user, _)| user)
            .collect();
        let hiding = prefs.hiding_online_status(&live).await?;
        online += live.iter().filter(|u| !hiding.contains(*u)).count() as u64;
    }
    Ok(online)
}

/// Which rooms may have a new online count, and the count each last announced, on this node.
/// Presence changes mark rooms; a periodic flush recounts each marked room once, so a burst of
/// changes (a reconnect storm) costs one count per room per interval.
#[derive(Default)]
pub struct RoomCounts {
    dirty: Mutex<HashSet<String>>,
    last: Mutex<HashMap<String, u64>>,
}

impl RoomCounts {
    /// Marks rooms whose members' presence changed.
    pub fn mark(&self, rooms: impl IntoIterator<Item = String>) {
        lock(&self.dirty).extend(rooms);
    }

    /// The rooms marked since the last call, unmarking them.
    pub fn take_dirty(&self) -> Vec<String> {
        lock(&self.dirty).drain().collect()
    }

    /// Records `count` for `room`; true when it differs from the last one recorded (or none was).
    pub fn changed(&self, room: &str, count: u64) -> bool {
        let mut last = lock(&self.last);
        if last.get(room) == Some(&count) {
            return false;
        }
        if last.len() >= MAX_REMEMBERED_COUNTS && !last.contains_key(room) {
            last.clear();
        }
        last.insert(room.to_owned(), count);
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data, never held across an await: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_rooms_are_taken_once() {
        let counts = RoomCounts::default();
        counts.mark(["a".to_owned(), "b".to_owned()]);
        counts.mark(["a".to_owned()]);
        let mut taken = counts.take_dirty();
        taken.sort();
        assert_eq!(taken, ["a", "b"]);
        assert!(counts.take_dirty().is_empty());
    }

    #[test]
    fn only_changed_counts_are_announced() {
        let counts = RoomCounts::default();
        assert!(counts.changed("a", 0));
        assert!(!counts.changed("a", 0));
        assert!(counts.changed("a", 1));
        assert!(counts.changed("b", 1));
    }
}
