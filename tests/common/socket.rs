//! A minimal Socket.IO client over Engine.IO v4 HTTP long-polling, for Rust tests that need a
//! real socket (connection slots, rooms) without a Node process: connect to `/realtime` with a
//! token, emit with an ack, wait for an event, close.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

const NAMESPACE: &str = "/realtime";

/// One connected socket.
pub struct PollingSocket {
    client: reqwest::Client,
    url: String,
    /// Socket.IO packets received and not yet consumed (without the `4` Engine.IO prefix).
    inbox: VecDeque<String>,
    next_ack: u64,
}

/// How a connection attempt ended without a socket: the `connect_error` message.
#[derive(Debug)]
pub struct Refused(pub String);

impl PollingSocket {
    /// Opens an Engine.IO session and connects `/realtime` with `auth.token`; returns the
    /// socket and its `session:ready` payload, or the server's `connect_error` message.
    pub async fn connect(address: &str, token: &str) -> Result<(Self, Value), Refused> {
        Self::connect_with(address, json!({ "token": token })).await
    }

    /// Like [`PollingSocket::connect`] with a whole CONNECT `auth` payload (e.g. a resume
    /// `cursor` and `feed`).
    pub async fn connect_with(address: &str, auth: Value) -> Result<(Self, Value), Refused> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .expect("building the HTTP client");
        let open = client
            .get(format!("{address}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .expect("Engine.IO handshake")
            .text()
            .await
            .expect("Engine.IO handshake body");
        let open: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
            .expect("open packet JSON");
        let sid = open["sid"].as_str().expect("an Engine.IO sid");
        let mut socket = Self {
            client,
            url: format!("{address}/socket.io/?EIO=4&transport=polling&sid={sid}"),
            inbox: VecDeque::new(),
            next_ack: 1,
        };
        socket.send(&format!("0{NAMESPACE},{auth}")).await;
        let prefix_ok = format!("0{NAMESPACE},");
        let prefix_err = format!("4{NAMESPACE},");
        let answer = socket
            .next_packet(|p| p.starts_with(&prefix_ok) || p.starts_with(&prefix_err))
            .await;
        if let Some(error) = answer.strip_prefix(&prefix_err) {
            let error: Value = serde_json::from_str(error).unwrap_or(Value::Null);
            return Err(Refused(
                error["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let ready = socket.next_event("session:ready").await;
        Ok((socket, ready))
    }

    /// Sends one Socket.IO packet (without the Engine.IO `4`).
    async fn send(&self, packet: &str) {
        self.post(&format!("4{packet}")).await;
    }

    async fn post(&self, body: &str) {
        let response = self
            .client
            .post(&self.url)
            .body(body.to_owned())
            .send()
            .await
            .expect("Engine.IO POST");
        assert!(
            response.status().is_success(),
            "Engine.IO POST answered {}",
            response.status()
        );
    }

    /// One long-poll; answers pings, queues messages.
    async fn poll(&mut self) {
        let body = self
            .client
            .get(&self.url)
            .send()
            .await
            .expect("Engine.IO poll")
            .text()
            .await
            .expect("Engine.IO poll body");
        for packet in body.split('\u{1e}') {
            match packet.as_bytes().first() {
                Some(b'2') => self.post("3").await,
                Some(b'4') => self.inbox.push_back(packet[1..].to_owned()),
                Some(b'1') => panic!("the server closed the Engine.IO session"),
                _ => {}
            }
        }
    }

    /// The first queued or incoming packet matching `wanted`; earlier others stay queued.
    async fn next_packet(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            if let Some(index) = self.inbox.iter().position(|p| wanted(p)) {
                return self.inbox.remove(index).unwrap_or_default();
            }
            self.poll().await;
        }
    }

    /// The payload of the next `event` this socket receives.
    pub async fn next_event(&mut self, event: &str) -> Value {
        let prefix = format!("2{NAMESPACE},");
        let head = format!("[{}", json!(event));
        let packet = self
            .next_packet(|p| {
                p.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with(&head))
            })
            .await;
        let args: Value = serde_json::from_str(&packet[prefix.len()..]).expect("event packet JSON");
        args[1].clone()
    }

    /// Every argument of the next `event` this socket receives (payload first, then e.g. the
    /// resume cursor of a journaled event).
    pub async fn next_event_args(&mut self, event: &str) -> Vec<Value> {
        let prefix = format!("2{NAMESPACE},");
        let head = format!("[{}", json!(event));
        let packet = self
            .next_packet(|p| {
                p.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with(&head))
            })
            .await;
        let args: Value = serde_json::from_str(&packet[prefix.len()..]).expect("event packet JSON");
        args.as_array().map(|a| a[1..].to_vec()).unwrap_or_default()
    }

    /// Every event received so far, in arrival order, as `(name, arguments)`, taken out of the
    /// inbox (other packets stay).
    pub fn take_events(&mut self) -> Vec<(String, Vec<Value>)> {
        let prefix = format!("2{NAMESPACE},");
        let mut events = Vec::new();
        self.inbox.retain(|p| {
            let Some(rest) = p.strip_prefix(&prefix) else {
                return true;
            };
            let Ok(Value::Array(args)) = serde_json::from_str::<Value>(rest) else {
                return true;
            };
            let name = args
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            events.push((name, args[1..].to_vec()));
            false
        });
        events
    }

    /// Whether an `event` packet is among those received so far (no waiting).
    pub fn has_received(&self, event: &str) -> bool {
        let head = format!("2{NAMESPACE},[{}", json!(event));
        self.inbox.iter().any(|p| p.starts_with(&head))
    }

    /// Emits `event` with `data` and waits for its ack. Every packet the server sent this
    /// socket before the ack is queued by then, so `has_received` after it sees them.
    pub async fn emit_with_ack(&mut self, event: &str, data: Value) -> Value {
        let id = self.emit_asking_ack(event, data).await;
        self.ack(id).await
    }

    /// Emits `event` with `data` asking for an ack, without waiting for it: the ack's id, for
    /// [`PollingSocket::ack`].
    pub async fn emit_asking_ack(&mut self, event: &str, data: Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("2{NAMESPACE},{id}{}", json!([event, data])))
            .await;
        id
    }

    /// Waits for the ack with this id (from [`PollingSocket::emit_asking_ack`]).
    pub async fn ack(&mut self, id: u64) -> Value {
        let prefix = format!("3{NAMESPACE},{id}[");
        let packet = self.next_packet(|p| p.starts_with(&prefix)).await;
        let args: Value =
            serde_json::from_str(&packet[prefix.len() - 1..]).expect("ack packet JSON");
        args[0].clone()
    }

    /// Emits `event` with `data` `count` times without acks, all in one HTTP request: the
    /// server reads them in one go, as it would a flooder's buffered WebSocket frames.
    pub async fn emit_many(&self, event: &str, data: Value, count: usize) {
        let packet = format!("42{NAMESPACE},{}", json!([event, data]));
        let body = vec![packet; count].join("\u{1e}");
        self.post(&body).await;
    }

    /// Closes the Engine.IO session (the server sees a client disconnect).
    pub async fn close(self) {
        self.post("1").await;
    }
}
