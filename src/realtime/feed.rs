//! The live feed over Socket.IO (contract §6): `feed:subscribe` / `feed:unsubscribe` (with
//! the summary modes of `feed_counts`: `mode: "counts"`, `feed:watch`), and the fan-out of a published activity to the feed rooms of the actor's followers and to
//! `feed:public`.
//!
//! Fan-out cost is one emit per 1000 followers, whatever the follower count: the payload is
//! serialised once, rooms are batched, and the adapter resolves rooms to sockets on every node.
//! A socket is in at most one `feed:{userId}` room (its own user's), so batches never overlap;
//! `feed:public` rides in the first batch (socketioxide delivers once per socket within one
//! broadcast, so a socket in both `feed:{x}` and `feed:public` gets it once) and is excluded
//! from the later ones.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::feed_counts::{self, Mode};
use super::rooms;
use crate::domain::feed::{Activity, Audience};

/// Most Socket.IO rooms named in one emit: keeps each broadcast (and, with Redis, each
/// pub/sub message) a bounded size for actors with huge follower counts.
pub const FAN_OUT_CHUNK: usize = 1000;

/// Registers the feed event handlers on a new socket.
pub fn register<A: Adapter>(socket: &SocketRef<A>) {
    socket.on("feed:subscribe", on_subscribe::<A>);
    socket.on("feed:unsubscribe", on_unsubscribe::<A>);
    socket.on("feed:watch", on_watch::<A>);
    socket.on("feed:unwatch", on_unwatch::<A>);
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct SubscribePayload {
    following_only: Option<bool>,
    /// `events` (default) or `counts` (see `feed_counts`).
    mode: Option<Mode>,
    interval_ms: Option<u64>,
}

#[derive(Deserialize, Validate)]
struct Empty {}

/// Events mode joins `feed:{userId}`, and `feed:public` unless `followingOnly: true`.
/// Subscribing again replaces the choice: a later `followingOnly: true` leaves `feed:public`,
/// and switching mode leaves the other mode behind. Counts mode joins no feed room.
async fn on_subscribe<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx {
        socket, user, core, ..
    } = &ctx;
    ctx.respond("feed:subscribe", ack, async {
        let p: SubscribePayload = parse(data, Payload::Optional)?;
        let following_only = p.following_only == Some(true);
        if p.mode.unwrap_or_default() == Mode::Counts {
            let asked = feed_counts::interval(core, p.interval_ms)?;
            socket.leave(vec![rooms::feed(&user.id), rooms::FEED_PUBLIC.to_owned()]);
            let every =
                feed_counts::subscribe_counts(socket, core, &user.id, following_only, asked)
                    .await?;
            return Ok(json!({ "mode": "counts", "intervalMs": every.as_millis() as u64 }));
        }
        feed_counts::unsubscribe_counts(socket);
        socket.join(rooms::feed(&user.id));
        if following_only {
            socket.leave(rooms::FEED_PUBLIC);
        } else {
            socket.join(rooms::FEED_PUBLIC);
        }
        Ok(json!({}))
    })
    .await;
}

/// Leaves both feed rooms and ends counts mode; this socket gets no feed events or summaries
/// until it subscribes again (watched targets stay watched).
async fn on_unsubscribe<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { socket, user, .. } = &ctx;
    ctx.respond("feed:unsubscribe", ack, async {
        parse::<Empty>(data, Payload::Optional)?;
        socket.leave(vec![rooms::feed(&user.id), rooms::FEED_PUBLIC.to_owned()]);
        feed_counts::unsubscribe_counts(socket);
        Ok(json!({}))
    })
    .await;
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct WatchPayload {
    #[validate(length(min = 1, max = 128))]
    target_id: String,
    interval_ms: Option<u64>,
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct UnwatchPayload {
    #[validate(length(min = 1, max = 128))]
    target_id: String,
}

/// `feed:watch { targetId, intervalMs? }` → `feed:new_comments_available { targetId, count }`
/// at most once per interval while comments the viewer may see arrive on the target.
async fn on_watch<A: Adapter>(ctx: EventCtx<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let EventCtx {
        socket, user, core, ..
    } = &ctx;
    ctx.respond("feed:watch", ack, async {
        let p: WatchPayload = parse(data, Payload::Required)?;
        let asked = feed_counts::interval(core, p.interval_ms)?;
        let every = feed_counts::watch_target(socket, core, &user.id, &p.target_id, asked).await?;
        Ok(json!({ "targetId": p.target_id, "intervalMs": every.as_millis() as u64 }))
    })
    .await;
}

/// `feed:unwatch { targetId }`: no more comment counts for the target on this socket.
async fn on_unwatch<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { socket, .. } = &ctx;
    ctx.respond("feed:unwatch", ack, async {
        let p: UnwatchPayload = parse(data, Payload::Required)?;
        feed_counts::unwatch_target(socket, &p.target_id);
        Ok(json!({}))
    })
    .await;
}

/// The event a client receives for an activity type.
pub fn event_for(activity_type: &str) -> &'static str {
    match activity_type {
        "post" => "feed:new_post",
        "comment" => "feed:new_comment",
        _ => "feed:activity",
    }
}

/// One broadcast of a fan-out: the rooms it targets, and whether `feed:public` must be
/// excluded because an earlier batch already reached its sockets.
#[derive(Debug, PartialEq, Eq)]
struct Batch {
    rooms: Vec<String>,
    except_public: bool,
}

/// Splits the audience of an activity into broadcasts of at most `chunk` rooms each. The
/// actor is dropped from the followers (their own sockets are never notified anyway).
fn batches(actor_id: &str, followers: &[String], public: bool, chunk: usize) -> Vec<Batch> {
    let chunk = chunk.max(1);
    let mut targets: Vec<String> = Vec::with_capacity(followers.len() + 1);
    if public {
        targets.push(rooms::FEED_PUBLIC.to_owned());
    }
    targets.extend(
        followers
            .iter()
            .filter(|f| f.as_str() != actor_id)
            .map(|f| rooms::feed(f)),
    );
    targets
        .chunks(chunk)
        .enumerate()
        .map(|(index, rooms)| Batch {
            rooms: rooms.to_vec(),
            except_public: public && index > 0,
        })
        .collect()
}

impl<A: Adapter> Emitter<'_, A> {
    /// Delivers a stored activity to the subscribed sockets of `followers` (and of
    /// `feed:public` for public activities), never to any socket of the actor.
    pub async fn fan_out_activity(&self, activity: &Activity, followers: &[String]) {
        let public = activity.audience == Audience::Public;
        let plan = batches(&activity.actor_id, followers, public, FAN_OUT_CHUNK);
        if plan.is_empty() {
            return;
        }
        let payload = match serde_json::to_value(activity) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(activity = %activity.id, error = %e, "serialising activity failed");
                return;
            }
        };
        let event = event_for(&activity.activity_type);
        let actor = rooms::user(&activity.actor_id);
        for batch in plan {
            let Some(ns) = self.namespace() else { return };
            let mut ops = ns.to(batch.rooms).except(actor.clone());
            if batch.except_public {
                ops = ops.except(rooms::FEED_PUBLIC);
            }
            self.send(Some(ops), event, &payload).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i}")).collect()
    }

    #[test]
    fn event_names_by_type() {
        assert_eq!(event_for("post"), "feed:new_post");
        assert_eq!(event_for("comment"), "feed:new_comment");
        assert_eq!(event_for("like"), "feed:activity");
    }

    #[test]
    fn nothing_to_send_without_audience() {
        assert!(batches("a", &[], false, 1000).is_empty());
        assert!(batches("a", &["a".to_owned()], false, 1000).is_empty());
    }

    #[test]
    fn public_without_followers_is_one_emit_to_feed_public() {
        assert_eq!(
            batches("a", &[], true, 1000),
            [Batch {
                rooms: vec!["feed:public".to_owned()],
                except_public: false
            }]
        );
    }

    #[test]
    fn chunks_hold_at_most_the_limit_and_cover_everyone_once() {
        let followers = users(2500);
        let plan = batches("actor", &followers, false, 1000);
        assert_eq!(
            plan.iter().map(|b| b.rooms.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert!(plan.iter().all(|b| !b.except_public));
        let all: Vec<&String> = plan.iter().flat_map(|b| &b.rooms).collect();
        assert_eq!(all.len(), 2500);
        assert_eq!(all[0], "feed:u0");
    }

    #[test]
    fn public_goes_in_the_first_chunk_and_is_excluded_later() {
        let plan = batches("actor", &users(1500), true, 1000);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].rooms[0], "feed:public");
        assert_eq!(plan[0].rooms.len(), 1000);
        assert!(!plan[0].except_public);
        assert_eq!(plan[1].rooms.len(), 501);
        assert!(plan[1].except_public);
        assert!(!plan[1].rooms.iter().any(|r| r == "feed:public"));
    }

    #[test]
    fn the_actor_is_never_a_target() {
        let followers = vec!["actor".to_owned(), "b".to_owned()];
        let plan = batches("actor", &followers, false, 1000);
        assert_eq!(plan[0].rooms, ["feed:b"]);
    }
}
