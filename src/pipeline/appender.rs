//! The appender: one task per node that stores journaled events. Whatever is queued when it
//! takes its turn goes into ONE transaction (group commit), so a burst of events costs one
//! commit, not one per event; ids are assigned in queue order, and only after the commit are
//! the events handed to this node's dispatcher and to the bus, in id order.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Append, Done, Input, journal};
use crate::state::Core;

/// Most events stored in one transaction.
const MAX_BATCH: usize = 2_000;

pub(super) async fn run(core: Arc<Core>, mut appends: mpsc::Receiver<Append>) {
    tracing::info!(task = "event_appender", "started");
    let pipeline = &core.pipeline;
    // Runs until `Pipeline::drain` closes the queue, after the node's last request: what was
    // accepted until then is stored and handed on.
    while let Some(first) = appends.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].events.len();
        while count < MAX_BATCH {
            match appends.try_recv() {
                Ok(next) => {
                    count += next.events.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let lens: Vec<usize> = batch.iter().map(|a| a.events.len()).collect();
        let mut events: Vec<_> = batch
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.events))
            .collect();
        let stored = async {
            let tx = core.writes.begin().await?;
            journal::append(&*tx, &mut events).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = stored {
            tracing::error!(task = "event_appender", events = events.len(), error = %e, "journal write failed");
            for a in batch {
                let _ = a.reply.send(Err(e.to_string()));
            }
            continue;
        }
        if let Some(bus) = &pipeline.bus {
            bus.publish(pipeline.node_id(), &events).await;
        }
        let mut ids = events.iter().map(|e| e.id.unwrap_or_default());
        let answers: Vec<Vec<u64>> = lens
            .iter()
            .map(|n| ids.by_ref().take(*n).collect())
            .collect();
        // Each request's signal rides on its last event: delivery is in id order.
        let mut signals: std::collections::HashMap<u64, Done> = std::collections::HashMap::new();
        let mut replies = Vec::with_capacity(batch.len());
        for (a, ids) in batch.into_iter().zip(answers) {
            let (done, wait) = tokio::sync::oneshot::channel();
            match ids.last() {
                Some(last) => {
                    signals.insert(*last, done);
                }
                None => {
                    let _ = done.send(());
                }
            }
            replies.push((a.reply, ids, wait));
        }
        for event in events {
            let done = event.id.and_then(|id| signals.remove(&id));
            pipeline.feed(Input::Event(event, done)).await;
        }
        for (reply, ids, wait) in replies {
            let _ = reply.send(Ok((ids, wait)));
        }
    }
    pipeline.mark_drained();
    tracing::info!(task = "event_appender", "stopped");
}
