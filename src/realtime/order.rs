//! Events of one socket are handled in the order they arrived. socketioxide runs each event's
//! handler in its own task, so two `chat:message` sent back to back could otherwise take seqs in
//! the wrong order, and an `isTyping: false` could overtake its `true`. Extractors run
//! synchronously, in arrival order, before the handler task is spawned: [`Turn`] takes a ticket
//! there, and the handler waits for its turn before doing anything.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use tokio::sync::watch;

/// The turnstile of one socket, kept in its extensions.
pub struct Sequencer {
    state: Mutex<State>,
    serving: watch::Sender<u64>,
}

struct State {
    next_ticket: u64,
    /// Tickets finished out of order, waiting for the ones before them.
    done: BTreeSet<u64>,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next_ticket: 0,
                done: BTreeSet::new(),
            }),
            serving: watch::channel(0).0,
        }
    }
}

impl Sequencer {
    fn ticket(self: &Arc<Self>) -> Turn {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        Turn {
            ticket,
            sequencer: Some(self.clone()),
        }
    }

    fn finish(&self, ticket: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.done.insert(ticket);
        let mut serving = *self.serving.borrow();
        while state.done.remove(&serving) {
            serving += 1;
        }
        self.serving.send_replace(serving);
    }
}

/// An event's place in its socket's order. Dropping it (when the handler ends, or if it never
/// runs) lets the next event go.
pub struct Turn {
    ticket: u64,
    /// `None` for sockets without a sequencer (never set up): no ordering to keep.
    sequencer: Option<Arc<Sequencer>>,
}

impl Turn {
    /// Waits until every earlier event of this socket has been handled.
    pub async fn wait(&self) {
        let Some(sequencer) = &self.sequencer else {
            return;
        };
        let mut serving = sequencer.serving.subscribe();
        // The sender lives in the sequencer, which this turn keeps alive: this cannot fail.
        let _ = serving.wait_for(|s| *s >= self.ticket).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(sequencer) = &self.sequencer {
            sequencer.finish(self.ticket);
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
                ticket: 0,
                sequencer: None,
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
    async fn an_abandoned_turn_lets_the_next_one_go() {
        let sequencer = Arc::new(Sequencer::default());
        let (first, second) = (sequencer.ticket(), sequencer.ticket());
        drop(second);
        first.wait().await;
        let third = sequencer.ticket();
        drop(first);
        third.wait().await;
    }
}
