//! Events of one socket are handled in the order they arrived, within a budget. socketioxide
//! runs each event's handler in its own task, so two `chat:message` sent back to back could
//! otherwise take seqs in the wrong order, and an `isTyping: false` could overtake its `true`.
//! Extractors run synchronously, in arrival order, before the handler task is spawned: [`Turn`]
//! takes a ticket there, and the handler waits for its turn before doing anything.
//!
//! The line is bounded: every event spends a token of the socket's [`Budget`], and at most
//! `depth` admitted events wait. An event refused for either reason takes no place in the line
//! (it is answered `RATE_LIMITED` at once), so a flooding socket delays nobody, not even its
//! own admitted events. Each finished event hands over to exactly the next waiting one (its own
//! [`Notify`]), so a backlog of n events costs n wakeups, not n².
//!
//! A `chat:message` is ordered by its place in the write path's queue, not by its commit: once
//! it is queued ([`Turn::hand_over`]) the socket's next event may start while it waits for the
//! commit, so a socket sending messages back to back gets them into one group commit instead
//! of one commit each (on PostgreSQL a commit takes milliseconds: four senders of 125 msg/s
//! each saturated it). Seqs still follow the socket's order, since the queue is first in, first
//! committed. Every other event waits until no message of its socket is in flight
//! ([`Turn::wait_alone`]), so it sees everything sent before it, as when each event waited for
//! the previous one to finish; at most [`IN_FLIGHT_MAX`] messages of a socket are in flight.
//!
//! Nothing here is a task: an idle socket costs one small struct in its extensions.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use tokio::sync::Notify;

use super::budget::{Budget, BudgetLimits, Refusal};

/// Most messages of one socket waiting for their commits after handing over the turn; the
/// next one keeps the turn until it is done, as every event did before.
pub const IN_FLIGHT_MAX: u8 = 16;

/// The turnstile of one socket, kept in its extensions.
pub struct Sequencer {
    state: Mutex<State>,
    /// Set once the socket is being dropped (too slow, or flooding): its later events are
    /// refused without running, and it is not dropped twice.
    dropping: AtomicBool,
    /// When the line opened, i.e. the socket connected: rooms its user joined later are rooms
    /// it was moved into live, which a membership resync may join again. Kept here rather than
    /// as an extension of its own, because every extension costs an idle socket a box and
    /// grows its map.
    opened_at: chrono::DateTime<chrono::Utc>,
}

struct State {
    /// Whether an admitted event holds the turn right now.
    running: bool,
    /// Admitted events waiting for the turn, oldest first.
    waiting: VecDeque<Arc<Slot>>,
    /// Most events that may wait.
    depth: usize,
    budget: Budget,
    /// Events that handed the turn over before they finished ([`Turn::hand_over`]) and have
    /// not finished yet.
    in_flight: u8,
    /// The event holding the turn in [`Turn::wait_alone`], woken once `in_flight` is 0 (a slot
    /// made only then: an idle socket pays for an empty option).
    drain_waiter: Option<Arc<Slot>>,
}

/// The wait of one admitted event. Its state only changes under the sequencer's lock.
struct Slot {
    state: AtomicU8,
    notify: Notify,
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Limits of one socket's line of events.
#[derive(Clone, Copy, Debug)]
pub struct LineLimits {
    pub budget: BudgetLimits,
    pub depth: usize,
}

impl Default for Sequencer {
    /// No budget and no depth limit: ordering only.
    fn default() -> Self {
        Self::new(LineLimits {
            budget: BudgetLimits::unlimited(),
            depth: usize::MAX,
        })
    }
}

impl Sequencer {
    pub fn new(limits: LineLimits) -> Self {
        Self {
            state: Mutex::new(State {
                running: false,
                waiting: VecDeque::new(),
                depth: limits.depth,
                budget: Budget::new(limits.budget, Instant::now()),
                in_flight: 0,
                drain_waiter: None,
            }),
            dropping: AtomicBool::new(false),
            opened_at: chrono::Utc::now(),
        }
    }

    /// When the socket connected (see the field).
    pub fn opened_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.opened_at
    }

    /// Marks the socket as being dropped; true for the first caller only.
    pub fn start_dropping(&self) -> bool {
        !self.dropping.swap(true, Ordering::AcqRel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ticket(self: &Arc<Self>) -> Turn {
        self.ticket_at(Instant::now())
    }

    fn ticket_at(self: &Arc<Self>, now: Instant) -> Turn {
        let refused = |refusal| Turn {
            kind: Kind::Refused(refusal),
            sequencer: None,
            handed_over: AtomicBool::new(false),
        };
        if self.dropping.load(Ordering::Acquire) {
            return refused(Refusal {
                retry_after: Duration::ZERO,
                flood: false,
            });
        }
        let mut state = self.lock();
        if let Err(refusal) = state.budget.spend(now) {
            return refused(refusal);
        }
        let kind = if !state.running {
            state.running = true;
            Kind::Holding
        } else if state.waiting.len() >= state.depth {
            let refusal = state.budget.refuse(now);
            return refused(refusal);
        } else {
            let slot = Arc::new(Slot {
                state: AtomicU8::new(WAITING),
                notify: Notify::new(),
            });
            state.waiting.push_back(slot.clone());
            Kind::Waiting(slot)
        };
        Turn {
            kind,
            sequencer: Some(self.clone()),
            handed_over: AtomicBool::new(false),
        }
    }

    /// Passes the turn to the oldest event still waiting, waking that one only.
    fn pass_on(state: &mut State) {
        state.running = false;
        while let Some(slot) = state.waiting.pop_front() {
            if slot.state.load(Ordering::Acquire) == ABANDONED {
                continue;
            }
            slot.state.store(GRANTED, Ordering::Release);
            // Stores a permit when the event is not waiting yet: no wakeup is lost.
            slot.notify.notify_one();
            state.running = true;
            return;
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// An event's place in its socket's order. Dropping it (when the handler ends, or if it never
/// runs) lets the next event go.
pub struct Turn {
    kind: Kind,
    /// `None` for refused events and sockets without a sequencer: nothing to release.
    sequencer: Option<Arc<Sequencer>>,
    /// Gave the turn to the next event before finishing (counted in `in_flight`). Only
    /// changed under the sequencer's lock.
    handed_over: AtomicBool,
}

enum Kind {
    /// Holds the turn (or has no order to keep).
    Holding,
    /// Admitted, waiting for the turn.
    Waiting(Arc<Slot>),
    /// Refused by the budget or the depth: answered at once, never run.
    Refused(Refusal),
}

impl Turn {
    /// Why the event may not run, if it may not.
    pub fn refusal(&self) -> Option<Refusal> {
        match &self.kind {
            Kind::Refused(refusal) => Some(*refusal),
            _ => None,
        }
    }

    /// Waits until every earlier admitted event of this socket has been handled. Returns at
    /// once for a refused event (which must not run: check [`Turn::refusal`] first).
    pub async fn wait(&self) {
        let Kind::Waiting(slot) = &self.kind else {
            return;
        };
        while slot.state.load(Ordering::Acquire) != GRANTED {
            slot.notify.notified().await;
        }
    }

    /// [`Turn::wait`], then until no earlier event of this socket is still in flight: for
    /// every event but `chat:message`, so it sees what was sent before it.
    pub async fn wait_alone(&self) {
        self.wait().await;
        let Some(sequencer) = &self.sequencer else {
            return;
        };
        let slot = {
            let mut state = sequencer.lock();
            if state.in_flight == 0 {
                return;
            }
            let slot = Arc::new(Slot {
                state: AtomicU8::new(WAITING),
                notify: Notify::new(),
            });
            state.drain_waiter = Some(slot.clone());
            slot
        };
        while slot.state.load(Ordering::Acquire) != GRANTED {
            slot.notify.notified().await;
        }
    }

    /// Lets the socket's next event start before this one finished (what orders this one
    /// is done: see the module documentation). Does nothing unless this event holds the turn,
    /// once it was called before, or while [`IN_FLIGHT_MAX`] handed-over events are running.
    pub fn hand_over(&self) {
        let Some(sequencer) = &self.sequencer else {
            return;
        };
        let holding = match &self.kind {
            Kind::Holding => true,
            Kind::Waiting(slot) => slot.state.load(Ordering::Acquire) == GRANTED,
            Kind::Refused(_) => false,
        };
        let mut state = sequencer.lock();
        if !holding || self.handed_over.load(Ordering::Acquire) || state.in_flight >= IN_FLIGHT_MAX
        {
            return;
        }
        self.handed_over.store(true, Ordering::Release);
        state.in_flight += 1;
        Sequencer::pass_on(&mut state);
    }

    #[cfg(test)]
    fn granted(&self) -> bool {
        match &self.kind {
            Kind::Holding => true,
            Kind::Waiting(slot) => slot.state.load(Ordering::Acquire) == GRANTED,
            Kind::Refused(_) => false,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(sequencer) = &self.sequencer else {
            return;
        };
        let mut state = sequencer.lock();
        if self.handed_over.load(Ordering::Acquire) {
            // The turn went on already; this one only stops being in flight.
            state.in_flight -= 1;
            if state.in_flight == 0
                && let Some(waiter) = state.drain_waiter.take()
            {
                waiter.state.store(GRANTED, Ordering::Release);
                // Stores a permit when it is not waiting yet: no wakeup is lost.
                waiter.notify.notify_one();
            }
            return;
        }
        match &self.kind {
            Kind::Holding => Sequencer::pass_on(&mut state),
            Kind::Waiting(slot) => {
                if slot.state.load(Ordering::Acquire) == GRANTED {
                    Sequencer::pass_on(&mut state);
                } else {
                    // Still in line: skipped when its turn comes.
                    slot.state.store(ABANDONED, Ordering::Release);
                }
            }
            Kind::Refused(_) => {}
        }
    }
}

impl<A: Adapter> FromMessageParts<A> for Turn {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        _: &mut Value,
        _: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(match socket.extensions.get::<Arc<Sequencer>>() {
            Some(sequencer) => sequencer.ticket(),
            None => Turn {
                kind: Kind::Holding,
                sequencer: None,
                handed_over: AtomicBool::new(false),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_run_in_ticket_order_whatever_order_they_finish() {
        let sequencer = Arc::new(Sequencer::default());
        let (first, second, third) = (sequencer.ticket(), sequencer.ticket(), sequencer.ticket());
        first.wait().await;
        // The third may not start before the second finished…
        let third_waits =
            tokio::time::timeout(std::time::Duration::from_millis(20), third.wait()).await;
        assert!(third_waits.is_err());
        // …even when the first is done.
        drop(first);
        second.wait().await;
        drop(second);
        third.wait().await;
    }

    #[tokio::test]
    async fn a_handed_over_turn_lets_the_next_event_start_and_one_waiting_alone_waits_for_it() {
        let sequencer = Arc::new(Sequencer::default());
        let (message, next, alone) = (sequencer.ticket(), sequencer.ticket(), sequencer.ticket());
        message.wait().await;
        message.hand_over();
        // The next one starts while the first is still running…
        next.wait().await;
        next.hand_over();
        // …and one that must see them both gets the turn, then waits until both finished.
        {
            let waits = alone.wait_alone();
            tokio::pin!(waits);
            assert!(futures::poll!(&mut waits).is_pending());
            drop(message);
            assert!(
                futures::poll!(&mut waits).is_pending(),
                "one is still in flight"
            );
            drop(next);
            waits.await;
        }
        // Dropped, it passes the turn on as any event does.
        let after = sequencer.ticket();
        assert!(!after.granted());
        drop(alone);
        assert!(after.granted());
    }

    #[tokio::test]
    async fn at_most_in_flight_max_events_hand_over_at_once() {
        let sequencer = Arc::new(Sequencer::default());
        let mut running = Vec::new();
        for _ in 0..IN_FLIGHT_MAX {
            let turn = sequencer.ticket();
            turn.wait().await;
            turn.hand_over();
            running.push(turn);
        }
        let last = sequencer.ticket();
        last.wait().await;
        last.hand_over();
        let next = sequencer.ticket();
        assert!(
            !next.granted(),
            "the turn stays with the event over the limit"
        );
        drop(running.pop());
        assert!(
            !next.granted(),
            "a slot coming free does not hand it over by itself"
        );
        drop(last);
        assert!(next.granted());
    }

    #[tokio::test]
    async fn an_abandoned_turn_lets_the_next_one_go() {
        let sequencer = Arc::new(Sequencer::default());
        let (first, second) = (sequencer.ticket(), sequencer.ticket());
        drop(second);
        first.wait().await;
        let third = sequencer.ticket();
        drop(first);
        third.wait().await;
    }

    fn limited(depth: usize, burst: u32) -> Arc<Sequencer> {
        Arc::new(Sequencer::new(LineLimits {
            budget: BudgetLimits {
                per_second: 1,
                burst,
                flood_rejections: 1_000,
            },
            depth,
        }))
    }

    #[tokio::test]
    async fn the_line_holds_at_most_depth_waiting_events_and_refuses_the_rest_without_a_place() {
        let sequencer = limited(3, 100);
        let now = Instant::now();
        let running = sequencer.ticket_at(now);
        let waiting: Vec<Turn> = (0..3).map(|_| sequencer.ticket_at(now)).collect();
        assert!(waiting.iter().all(|t| t.refusal().is_none()));
        let refused = sequencer.ticket_at(now);
        let refusal = refused
            .refusal()
            .expect("a fourth waiting event is refused");
        assert!(refusal.retry_after > Duration::ZERO);
        assert_eq!(sequencer.waiting(), 3, "a refused event takes no place");
        // A refused event runs at once (it is only answered) and releases nothing when dropped.
        refused.wait().await;
        drop(refused);
        assert!(!waiting[0].granted());
        drop(running);
        assert!(waiting[0].granted());
        // Room again for one.
        assert!(sequencer.ticket_at(now).refusal().is_none());
    }

    #[tokio::test]
    async fn events_over_the_budget_are_refused_and_do_not_delay_admitted_ones() {
        let sequencer = limited(100, 2);
        let now = Instant::now();
        let (first, second) = (sequencer.ticket_at(now), sequencer.ticket_at(now));
        let third = sequencer.ticket_at(now);
        let refusal = third.refusal().expect("over the burst");
        assert!(refusal.retry_after <= Duration::from_secs(1));
        drop(third);
        drop(first);
        second.wait().await;
        // A second later a token is back.
        assert!(
            sequencer
                .ticket_at(now + Duration::from_secs(1))
                .refusal()
                .is_none()
        );
    }

    #[tokio::test]
    async fn each_finished_event_wakes_only_the_next_one_in_arrival_order() {
        let sequencer = Arc::new(Sequencer::default());
        let turns: Vec<Turn> = (0..1_000).map(|_| sequencer.ticket()).collect();
        let mut turns = turns.into_iter();
        let mut current = turns.next().expect("a first turn");
        for (i, next) in turns.enumerate() {
            assert!(current.granted());
            assert!(
                !next.granted(),
                "turn {} granted before its predecessor ended",
                i + 1
            );
            drop(current);
            // Exactly the next one holds the turn now; nobody behind it was touched.
            assert!(next.granted());
            next.wait().await;
            assert_eq!(sequencer.waiting(), 998 - i);
            current = next;
        }
    }

    #[tokio::test]
    async fn a_socket_being_dropped_has_its_events_refused() {
        let sequencer = limited(10, 10);
        assert!(sequencer.start_dropping());
        assert!(!sequencer.start_dropping(), "dropped once only");
        assert!(sequencer.ticket().refusal().is_some());
    }
}
