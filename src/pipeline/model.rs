//! The shared vocabulary of the pipeline: what an event is, which stream kind it belongs to and
//! what a client's resume position looks like.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// The stream a journaled event belongs to: retention and "must refetch" are per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Messages, edits and deletes, room changes, read and delivered watermarks.
    Chat,
    /// New notifications and read-state changes.
    #[serde(rename = "notifications")]
    Notification,
    /// Feed activities.
    Feed,
}

impl Kind {
    /// Every kind, in the order `reset` lists them.
    pub const ALL: [Kind; 3] = [Kind::Chat, Kind::Notification, Kind::Feed];

    /// The name stored in the journal and shown to clients in `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Notification => "notifications",
            Kind::Feed => "feed",
        }
    }

    /// The kind stored as `name` in the journal.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Who a feed activity is for: the actor's followers, and everyone subscribed to the public
/// feed when `public`. Kept instead of the follower rooms, which can be thousands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedScope {
    pub actor: String,
    pub public: bool,
}

/// One server→client event, built once and shared by every transport and node.
#[derive(Clone, Debug)]
pub struct Event {
    /// The journal position; `None` until appended, and forever for ephemeral events.
    pub id: Option<u64>,
    /// The contract's event name (`chat:new_message`, …).
    pub name: Arc<str>,
    /// The JSON payload, serialised once: Socket.IO, SSE and polls send these same bytes.
    pub payload: Arc<RawValue>,
    /// Socket.IO room names (`user:U`, `chat:R`, `feed:U`, `feed:public`): receivers in any of
    /// them get the event once.
    pub targets: Vec<String>,
    /// Room names or a socket id whose receivers are skipped (the origin socket, the typing user).
    pub except: Vec<String>,
    /// `Some` for events that reflect persisted state: they are journaled and carry a cursor.
    pub kind: Option<Kind>,
    /// For feed activities: the audience replay recomputes from the follow graph.
    pub feed: Option<FeedScope>,
}

impl Event {
    /// An event with `payload` serialised now. Fails only for payloads serde cannot write
    /// (non-string map keys), which the emit table never builds.
    pub fn new(
        name: impl Into<Arc<str>>,
        payload: &impl Serialize,
        targets: Vec<String>,
    ) -> serde_json::Result<Self> {
        let json = serde_json::to_string(payload)?;
        Ok(Self {
            id: None,
            name: name.into(),
            payload: Arc::from(RawValue::from_string(json)?),
            targets,
            except: Vec::new(),
            kind: None,
            feed: None,
        })
    }

    /// A copy without its audience (targets and exceptions empty): what one receiver keeps.
    pub fn clone_shallow(&self) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            payload: self.payload.clone(),
            targets: Vec::new(),
            except: Vec::new(),
            kind: self.kind,
            feed: self.feed.clone(),
        }
    }

    /// Marks the event as journaled in the stream `kind`.
    pub fn journaled(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Skips the receivers in `rooms`.
    pub fn except(mut self, rooms: impl IntoIterator<Item = String>) -> Self {
        self.except.extend(rooms);
        self
    }

    /// Whether a receiver in `rooms` gets this event (any target, no exception).
    pub fn reaches<'a>(&self, rooms: impl IntoIterator<Item = &'a str> + Clone) -> bool {
        let hit = |list: &[String]| {
            rooms
                .clone()
                .into_iter()
                .any(|r| list.iter().any(|t| t == r))
        };
        hit(&self.targets) && !hit(&self.except)
    }
}

/// A client's position in the journal: opaque to clients, `"<epoch>:<id>"` on the wire. The
/// epoch tells a cursor from a previous database (wiped or restored) from a current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: String,
    pub id: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.id)
    }
}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, id) = s.rsplit_once(':').ok_or(InvalidCursor)?;
        let valid_epoch = !epoch.is_empty()
            && epoch.len() <= 32
            && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_epoch {
            return Err(InvalidCursor);
        }
        let id = id.parse().map_err(|_| InvalidCursor)?;
        Ok(Cursor {
            epoch: epoch.to_owned(),
            id,
        })
    }
}

/// A cursor string this server never issued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this server issued")]
pub struct InvalidCursor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            epoch: "k3f9q1".into(),
            id: 1234,
        };
        assert_eq!(c.to_string(), "k3f9q1:1234");
        assert_eq!("k3f9q1:1234".parse::<Cursor>(), Ok(c));
        for bad in ["", "1234", ":12", "e:", "e:-1", "e:x", "a b:1", "e:1:2"] {
            assert_eq!(bad.parse::<Cursor>(), Err(InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn reach_is_any_target_minus_exceptions() {
        let e = Event::new("x", &1, vec!["chat:r".into(), "user:a".into()])
            .unwrap()
            .except(["user:b".to_owned()]);
        assert!(e.reaches(["chat:r"]));
        assert!(e.reaches(["user:a", "feed:public"]));
        assert!(!e.reaches(["chat:r", "user:b"]));
        assert!(!e.reaches(["user:c"]));
        assert_eq!(e.payload.get(), "1");
    }

    #[test]
    fn kinds_have_stable_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            serde_json::to_string(&Kind::Notification).unwrap(),
            "\"notifications\""
        );
    }
}
