//! A socket flooding events (issue 8): its refused events must cost the server nothing but
//! the refusal, and reconnecting must not buy it a fresh budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::socket::PollingSocket;
use crate::common::{Backend, spawn_app_with};

/// A budget of a few events, so nearly everything a flooder sends is refused.
const TIGHT: [&str; 8] = [
    "--rate-limit-per-minute",
    "10",
    "--socket-events-per-second",
    "1",
    "--socket-event-burst",
    "10",
    "--socket-queue-depth",
    "10",
];

/// 10,000 events read in one request used to become 10,000 handler tasks, each holding a
/// handler future of several KiB until it ran and found itself refused: at 60k events/s the
/// queue of tasks grew by gigabytes. A refused event is answered in the read loop now, so the
/// tasks alive at any moment stay within the socket's admitted events.
#[tokio::test]
async fn refused_events_spawn_no_handler_task() {
    let mut args = TIGHT.to_vec();
    args.extend(["--socket-flood-rejections", "1000000"]);
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let (mut socket, _) = PollingSocket::connect(&app.address, &app.token("flooder"))
        .await
        .expect("connecting");

    // Samples the runtime's live tasks from another thread while this one serves the flood.
    let runtime = tokio::runtime::Handle::current();
    let baseline = runtime.metrics().num_alive_tasks();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = stop.clone();
        let runtime = runtime.clone();
        move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(runtime.metrics().num_alive_tasks());
                std::hint::spin_loop();
            }
            peak
        }
    });

    let typing = json!({ "roomId": "no-such-room", "isTyping": true });
    socket
        .emit_many("chat:typing", typing.clone(), 10_000)
        .await;
    // Answered after everything before it was read: refused like the rest.
    let last = socket.emit_with_ack("chat:typing", typing).await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("the sampler thread");

    assert_eq!(last["ok"], false, "{last}");
    assert_eq!(last["error"]["code"], "RATE_LIMITED", "{last}");
    let extra = peak.saturating_sub(baseline);
    assert!(
        extra < 200,
        "{extra} more tasks alive during a flood of 10,000 refused events (baseline {baseline})"
    );
}

/// A socket dropped for flooding tells its user why, and the user's new sockets are refused
/// `RATE_LIMITED` until `SOCKET_FLOOD_COOLDOWN_MS` has passed; other users connect as usual.
#[tokio::test]
async fn a_flooder_is_refused_new_sockets_until_the_cooldown_ends() {
    let mut args = TIGHT.to_vec();
    args.extend([
        "--socket-flood-rejections",
        "20",
        "--socket-flood-cooldown-ms",
        "1500",
    ]);
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let token = app.token("flooder");
    let (mut socket, _) = PollingSocket::connect(&app.address, &token)
        .await
        .expect("connecting");
    socket
        .emit_many(
            "presence:activity",
            json!({ "activity": "viewing:post:1" }),
            100,
        )
        .await;
    let told = socket.next_event("session:error").await;
    assert_eq!(told["code"], "RATE_LIMITED", "{told}");
    let dropped_at = Instant::now();

    match PollingSocket::connect(&app.address, &token).await {
        Err(refused) => assert_eq!(refused.0, "RATE_LIMITED"),
        Ok(_) => panic!("a flooder reconnected during its cooldown"),
    }
    PollingSocket::connect(&app.address, &app.token("bystander"))
        .await
        .expect("another user connects during the cooldown");

    // No event marks the end of a cooldown: retry until it is over (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PollingSocket::connect(&app.address, &token).await {
            Ok(_) => break,
            Err(refused) => {
                assert_eq!(refused.0, "RATE_LIMITED");
                assert!(Instant::now() < deadline, "the cooldown never ended");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(1_000),
        "accepted again after {:?}, before the cooldown",
        dropped_at.elapsed()
    );
}
