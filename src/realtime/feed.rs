//! The live feed over Socket.IO (contract §6): `feed:subscribe` / `feed:unsubscribe` (with
//! the summary modes of `feed_counts`: `mode: "counts"`, `feed:watch`), and the fan-out of a published activity to the feed rooms of the actor's followers and to
//! `feed:public`.
//!
//! Fan-out cost is one event per activity, whatever the follower count: the payload is
//! serialised once, journaled once (with the actor and audience, not the follower rooms), and
//! each node's dispatcher resolves the rooms to its own sockets; a socket in both `feed:{x}`
//! and `feed:public` gets it once.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::feed_counts::{self, Mode};
use super::rooms;
use crate::domain::feed::{Activity, Audience};
use crate::pipeline::{FeedScope, Kind};

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
pub(super) async fn on_subscribe<A: Adapter>(
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
pub(super) async fn on_unsubscribe<A: Adapter>(
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
pub(super) async fn on_watch<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
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
pub(super) async fn on_unwatch<A: Adapter>(
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

impl<A: Adapter> Emitter<'_, A> {
    /// Delivers a stored activity to the subscribed sockets of `followers` (and of
    /// `feed:public` for public activities), never to any socket of the actor. One journaled
    /// event whatever the audience: the journal keeps its scope (actor, public), not the
    /// follower rooms, and replay recomputes the audience from the follow graph.
    pub async fn fan_out_activity(&self, activity: &Activity, followers: &[String]) {
        let scope = FeedScope {
            actor: activity.actor_id.clone(),
            public: activity.audience == Audience::Public,
        };
        let targets = crate::pipeline::feed_targets(&scope, followers);
        if targets.is_empty() {
            return;
        }
        let name = event_for(&activity.activity_type);
        let event = self.event(name, activity, targets, false).map(|mut e| {
            e.except.push(rooms::user(&activity.actor_id));
            e.feed = Some(scope);
            e.journaled(Kind::Feed)
        });
        if let Some(event) = event {
            self.publish(vec![event]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_by_type() {
        assert_eq!(event_for("post"), "feed:new_post");
        assert_eq!(event_for("comment"), "feed:new_comment");
        assert_eq!(event_for("like"), "feed:activity");
    }
}
