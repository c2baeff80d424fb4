//! A scripted HTTP receiver on 127.0.0.1:0 standing in for a push service or an app's webhook
//! endpoint: it records every POST (path, headers, raw body) and answers each with the next
//! scripted status (201 once the script is used up), so tests can make it fail, throttle or
//! forget a subscription on cue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

/// One request the receiver got.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A header as text, failing the test when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("a text header")
    }
}

/// An answer: status and an optional `Retry-After`.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<&'static str>,
}

type Script = Arc<Mutex<VecDeque<Answer>>>;

/// A running receiver; stops with the test's runtime.
pub struct Receiver {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub address: String,
    requests: mpsc::UnboundedReceiver<Received>,
    script: Script,
}

#[derive(Clone)]
struct Shared {
    tx: mpsc::UnboundedSender<Received>,
    script: Script,
}

impl Receiver {
    /// Binds a free port and starts answering.
    pub async fn start() -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let script: Script = Arc::default();
        let shared = Shared {
            tx,
            script: script.clone(),
        };
        let router = axum::Router::new().fallback(record).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let address = format!(
            "http://{}",
            listener.local_addr().expect("the receiver's address")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            address,
            requests,
            script,
        }
    }

    /// Answers the next requests with these statuses, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.script
            .lock()
            .expect("script lock")
            .extend(answers.iter().copied());
    }

    /// The next request, failing the test after 10 s without one.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("the receiver got no request within 10 s")
            .expect("the receiver stopped")
    }

    /// A request already received and not yet taken, if any.
    pub fn try_next(&mut self) -> Option<Received> {
        self.requests.try_recv().ok()
    }
}

/// A status, with `Retry-After` when scripted.
pub fn answer(status: u16, retry_after: Option<&'static str>) -> Answer {
    Answer {
        status,
        retry_after,
    }
}

async fn record(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let next = shared
        .script
        .lock()
        .map(|mut s| s.pop_front())
        .ok()
        .flatten()
        .unwrap_or(Answer {
            status: 201,
            retry_after: None,
        });
    let _ = shared.tx.send(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let status = StatusCode::from_u16(next.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match next.retry_after {
        Some(after) => (status, [("retry-after", after)]).into_response(),
        None => status.into_response(),
    }
}
