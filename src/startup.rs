//! Building and running the server. [`Application::build`] binds first, so tests can ask for
//! port 0 and read the real port before serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, SocketIoBuilder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, authenticate_socket};
use crate::cluster::invalidation::RedisCacheBus;
use crate::cluster::presence::RedisPresence;
use crate::cluster::rate_limit::RedisRateLimiter;
use crate::cluster::{self, ClusterAdapter};
use crate::config::{Config, DEV_JWT_SECRET, Environment, JwtAlgorithm};
use crate::domain::cache::{CacheBus, LocalOnly};
use crate::domain::chat::{ChatLimits, ChatService};
use crate::domain::feed::FeedService;
use crate::domain::notifications::NotificationService;
use crate::domain::preferences::PreferenceService;
use crate::domain::presence::{
    ActivityThrottle, AudienceCache, MemoryPresence, PresenceQueue, PresenceService, PresenceStore,
};
use crate::domain::rate_limit::{MemoryRateLimiter, RateLimiter};
use crate::domain::typing::TypingTracker;
use crate::metrics::Metrics;
use crate::realtime::{self, NAMESPACE};
use crate::state::{AppState, Core};
use crate::write_path::WritePath;

/// A bound, fully wired server, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    core: Arc<Core>,
    closer: Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>,
}

impl Application {
    /// Validates the config, connects the database (running migrations) and Redis when set,
    /// registers the namespace and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        if config.jwt_algorithm == JwtAlgorithm::Hs256 && config.jwt_secret.is_none() {
            tracing::warn!(
                "JWT_SECRET is not set: using the built-in development secret `{DEV_JWT_SECRET}`. \
                 Anyone can mint tokens for this server. Set JWT_SECRET before exposing it."
            );
        }
        if config.environment == Environment::Development && config.cors_origins.is_empty() {
            tracing::info!("CORS_ORIGINS is not set: allowing any origin (development)");
        }
        crate::demo::announce(&config);
        let db =
            crate::db::connect_and_migrate_with(&config.database_url, config.db_waits()).await?;
        let writes = WritePath::new(db.clone()).with_writer(
            crate::db::writer(
                &config.database_url,
                config.db_waits(),
                config.sqlite_checkpoint_interval_ms > 0,
            )
            .await?,
        );
        let jwt = JwtKeys::from_config(&config)?;
        let metrics = Metrics::install()?;
        let addr = SocketAddr::new(config.host, config.port);
        let listener =
            listen(addr, config.listen_backlog).with_context(|| format!("binding {addr}"))?;

        let redis = match &config.redis_url {
            Some(url) => Some(cluster::connect(url, &config.redis_key_prefix).await?),
            None => None,
        };
        let node_id = uuid::Uuid::now_v7().to_string();
        let (_, epoch) = crate::pipeline::journal::head(&db)
            .await
            .context("reading the event journal")?;
        let publisher = redis.as_ref().map(|r| {
            crate::pipeline::bus::Publisher::new(r.client.clone(), &config.redis_key_prefix)
        });
        let bus_subscriber = match &config.redis_url {
            Some(url) => {
                Some(crate::pipeline::bus::subscribe(url, &config.redis_key_prefix).await?)
            }
            None => None,
        };
        let pipeline = crate::pipeline::Pipeline::new(epoch, node_id.clone(), publisher);
        let shutdown = CancellationToken::new();
        let (presence_store, rate_limiter, bus): (
            Arc<dyn PresenceStore>,
            Arc<dyn RateLimiter>,
            Arc<dyn CacheBus>,
        ) = match &redis {
            None => (
                Arc::new(MemoryPresence::default()),
                Arc::new(MemoryRateLimiter::new(config.rate_limit_per_minute)),
                Arc::new(LocalOnly),
            ),
            Some(r) => {
                let prefix = &config.redis_key_prefix;
                tracing::info!(node = %node_id, "joining the cluster");
                (
                    Arc::new(RedisPresence::new(
                        r.client.clone(),
                        prefix,
                        node_id.clone(),
                        Duration::from_millis(config.node_ttl_ms),
                        config.idle_timeout(),
                    )),
                    Arc::new(RedisRateLimiter::new(
                        r.client.clone(),
                        prefix,
                        config.rate_limit_per_minute,
                    )),
                    Arc::new(RedisCacheBus::new(
                        r.client.clone(),
                        r.invalidations.clone(),
                        prefix,
                        shutdown.clone(),
                    )),
                )
            }
        };
        let outbound = Arc::new(crate::outbound::Outbound::from_config(&config)?);
        let limits = ChatLimits {
            max_message_length: config.max_message_length,
            members_inline_max: config.room_members_inline_max,
        };
        let core = Arc::new(Core {
            chat: ChatService::new(
                db.clone(),
                writes.clone(),
                limits,
                rate_limiter,
                bus.clone(),
                config.membership_cache_ttl(),
            ),
            preferences: PreferenceService::new(db.clone(), writes.clone()),
            bus,
            notifications: NotificationService::new(db.clone(), writes.clone(), outbound.clone()),
            push_subscriptions: crate::domain::push_subscriptions::PushSubscriptions::new(
                db.clone(),
                writes.clone(),
                config.push_subscriptions_per_user,
            ),
            outbound,
            feed: FeedService::new(db.clone(), writes.clone()),
            typing: TypingTracker::new(config.typing_throttle(), config.typing_timeout()),
            presence: PresenceService::new(presence_store, db.clone(), writes.clone()),
            presence_events: PresenceQueue::new(config.presence_queue_max, metrics.clone()),
            presence_audience: AudienceCache::new(
                Duration::from_millis(config.presence_audience_ttl_ms),
                config.presence_audience_cache_max,
            ),
            presence_activity: ActivityThrottle::new(Duration::from_millis(
                config.presence_activity_throttle_ms,
            )),
            room_counts: Default::default(),
            slots: Default::default(),
            flood_cooldown: crate::realtime::cooldown::FloodCooldown::new(
                config.socket_flood_cooldown(),
            ),
            pipeline,
            sessions: Default::default(),
            setups: tokio::sync::Semaphore::new(crate::realtime::setup_turns(&config.database_url)),
            db,
            db_status: Default::default(),
            db_probe: crate::db_status::Prober::start(
                &config.database_url,
                config.db_waits(),
                config.db_health_timeout(),
            )
            .await?,
            writes,
            jwt,
            metrics,
            redis: redis.as_ref().map(|r| r.client.clone()),
            shutdown,
            config,
        });

        let builder = socket_io_builder(&core);
        let (router, closer) = match redis {
            None => {
                let (layer, io) = builder.build_layer();
                io.ns(
                    NAMESPACE,
                    realtime::on_connect::<LocalAdapter>.with(authenticate_socket::<LocalAdapter>),
                );
                crate::tasks::spawn_all(io.clone(), core.clone());
                spawn_pipeline(io.clone(), core.clone(), None);
                tokio::spawn(realtime::slow_socket_sweeper(io.clone(), core.clone()));
                (app_router(&core, io.clone(), layer)?, closer(io))
            }
            Some(redis) => {
                tokio::spawn(cluster::invalidation::listen(
                    redis.invalidations,
                    core.clone(),
                ));
                let (layer, io) = builder
                    .with_adapter::<ClusterAdapter>(redis.adapter)
                    .build_layer();
                io.ns(
                    NAMESPACE,
                    realtime::on_connect::<ClusterAdapter>
                        .with(authenticate_socket::<ClusterAdapter>),
                )
                .await
                // The driver error's Display is often empty; its Debug says what went wrong.
                .map_err(|e| anyhow::anyhow!("initialising the Redis adapter: {e:?}"))?;
                if let (true, Some(url)) =
                    (core.config.redis_emitter_enabled, &core.config.redis_url)
                {
                    let subscriber =
                        cluster::emitter::subscribe(url, &core.config.redis_emitter_key, NAMESPACE)
                            .await?;
                    tokio::spawn(cluster::emitter::listen(
                        subscriber,
                        io.clone(),
                        NAMESPACE,
                        core.clone(),
                    ));
                }
                crate::tasks::spawn_all(io.clone(), core.clone());
                spawn_pipeline(io.clone(), core.clone(), bus_subscriber);
                tokio::spawn(realtime::membership::resync_on_resubscribe(
                    io.clone(),
                    core.clone(),
                    redis.resubscribed,
                ));
                tokio::spawn(realtime::slow_socket_sweeper(io.clone(), core.clone()));
                (app_router(&core, io.clone(), layer)?, closer(io))
            }
        };
        Ok(Self {
            listener,
            router,
            core,
            closer,
        })
    }

    /// The port actually bound (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Shared state, for tests that inspect what the server did.
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Serves until `signal` resolves, then shuts down gracefully: stop accepting, tell every
    /// socket to reconnect elsewhere, finish in-flight requests, stop background tasks.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            core,
            closer,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "switchboard listening");
        let shutdown = core.shutdown.clone();
        let on_signal = {
            let shutdown = shutdown.clone();
            let core = core.clone();
            async move {
                signal.await;
                tracing::info!("shutting down");
                // Sockets first: their transports are long-lived requests that would otherwise
                // keep the HTTP server from finishing.
                closer().await;
                let offline_at = chrono::Utc::now() + crate::realtime::grace(&core);
                if let Err(e) = core.presence.store.leave(offline_at).await {
                    tracing::warn!(error = ?e, "leaving the cluster's presence failed");
                }
                shutdown.cancel();
            }
        };
        // Acks and deliveries are small writes that must not wait for Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(on_signal);
        let timeout = core.config.shutdown_timeout();
        tokio::select! {
            result = server => result.context("serving HTTP")?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!("graceful shutdown timed out; exiting with requests in flight");
            }
        }
        // Every event accepted until the last request finished is committed and handed to
        // the other nodes: the clients of this node resume from the journal wherever they
        // reconnect.
        core.pipeline.drain().await;
        core.db.clone().close().await.ok();
        core.db_probe.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the appender, the dispatcher and (with Redis) the bus subscriber of this node.
fn spawn_pipeline<A: Adapter>(
    io: SocketIo<A>,
    core: Arc<Core>,
    subscriber: Option<fred::clients::SubscriberClient>,
) {
    let Some(input) = crate::pipeline::spawn_appender(core.clone()) else {
        tracing::error!("the event pipeline was already started");
        return;
    };
    tokio::spawn(crate::pipeline::dispatcher::run(io, core.clone(), input));
    if let Some(subscriber) = subscriber {
        let shutdown = core.shutdown.clone();
        tokio::spawn(async move {
            crate::pipeline::bus::listen(subscriber, &core.pipeline, shutdown).await;
        });
    }
}

fn socket_io_builder(core: &Arc<Core>) -> SocketIoBuilder {
    let max = core.config.max_payload_bytes;
    SocketIo::builder()
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ws_max_frame_size(max)
        .ping_interval(core.config.ping_interval())
        .ping_timeout(core.config.ping_timeout())
        .max_buffer_size(core.config.socket_buffer_size)
        .ws_read_buffer_size(core.config.ws_read_buffer_size)
        .with_state(core.clone())
}

fn app_router<A: Adapter>(
    core: &Arc<Core>,
    io: SocketIo<A>,
    layer: socketioxide::layer::SocketIoLayer<A>,
) -> anyhow::Result<axum::Router> {
    let state = AppState {
        core: core.clone(),
        io,
    };
    Ok(crate::http::router(state)
        .layer(layer)
        .layer(axum::middleware::map_request(own_handshake_parts))
        .layer(axum::middleware::from_fn_with_state(
            core.clone(),
            refuse_handshakes_while_database_down,
        ))
        .layer(crate::http::cors(&core.config)?))
}

/// While the database is known to be down, a new Engine.IO connection (a request to the
/// Socket.IO path without a `sid`) is answered 503 with `Retry-After: 1` before socketioxide
/// sees it. socket.io-client takes a failed transport as a network error and reconnects with
/// its backoff, by itself; a socket refused after connecting (a namespace `disconnect` or a
/// `connect_error`) would wait for the app to call `connect()`. Requests of open connections
/// pass: their sockets keep working for what needs no database.
async fn refuse_handshakes_while_database_down(
    axum::extract::State(core): axum::extract::State<Arc<Core>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let opens_connection = request.uri().path().starts_with(SOCKET_IO_PATH)
        && !request
            .uri()
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "sid"));
    if opens_connection && let Err(e) = core.db_status.check() {
        return axum::response::IntoResponse::into_response(e);
    }
    next.run(request).await
}

/// Binds the listener with room for `backlog` connections the kernel has completed and the
/// server not yet accepted (capped by `net.core.somaxconn`). tokio's `TcpListener::bind` asks
/// for 1,024: when 10,000 clients reconnect at once after a deploy, the queue overflows, the
/// kernel drops handshakes (`ListenOverflows` in `nstat`: thousands per 10,000-socket burst in
/// the bench) and those clients retransmit with backoff, seconds later.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart may rebind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Where socketioxide serves Engine.IO (its default, kept by the builder above).
const SOCKET_IO_PATH: &str = "/socket.io";

/// The headers of a Socket.IO request anything reads after the router: the bearer token
/// (`auth::socket`), the key engineioxide answers a WebSocket handshake with
/// (`sec-websocket-key`), and the body's `content-type` of a long-polling POST. hyper decides
/// on the upgrade while parsing (`connection`, `upgrade`) and engineioxide checks no version,
/// subprotocol or extension, so those stay behind: each kept header costs an idle socket a
/// slot (≈ 100 bytes) and its value for the socket's whole life.
const KEPT_HEADERS: &[axum::http::HeaderName] = &[
    axum::http::header::AUTHORIZATION,
    axum::http::header::CONTENT_TYPE,
    axum::http::header::SEC_WEBSOCKET_KEY,
];

/// Copies the URI and headers of a Socket.IO request out of hyper's read buffer, and drops the
/// extensions engineioxide does not need.
///
/// hyper parses a request without copying: its URI and header values are slices of the
/// connection's read buffer, and axum's `OriginalUri` extension is a clone of that URI.
/// engineioxide keeps the handshake request's parts (extensions included) for the socket's
/// whole life (`socket.req_parts()`), and one slice keeps the whole buffer allocated, so every
/// idle socket pinned kilobytes of buffer for a few hundred bytes of headers (measured on the
/// bench's bare-socketioxide reference: 29.6 → 22.4 KiB per idle connection with this copy).
/// Copied here, before socketioxide sees them, the buffer is freed after the handshake. Other
/// requests are left alone.
///
/// Only the headers something reads are kept ([`KEPT_HEADERS`]): a browser's handshake carries
/// a user agent, cookies, `accept-*` and `sec-fetch-*` (one to several KiB), and every idle
/// socket kept them all. The CORS layer, outside this one, has already read `origin`.
async fn own_handshake_parts(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return req;
    }
    let headers = std::mem::take(req.headers_mut());
    // Sized for what is kept: a map that grows by itself starts at six slots.
    let kept = headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(name))
        .count();
    let owned = req.headers_mut();
    *owned = axum::http::HeaderMap::with_capacity(kept);
    for (name, value) in &headers {
        if !KEPT_HEADERS.contains(name) {
            continue;
        }
        // Both copy their bytes into a fresh allocation.
        let name = axum::http::HeaderName::from_bytes(name.as_str().as_bytes());
        let value = axum::http::HeaderValue::from_bytes(value.as_bytes()).map(|mut v| {
            v.set_sensitive(value.is_sensitive());
            v
        });
        if let (Ok(name), Ok(value)) = (name, value) {
            owned.append(name, value);
        }
    }
    // Of the extensions, engineioxide needs only hyper's upgrade handle; the rest (the
    // router's path parameters and matched path, a second copy of the URI) would live as long
    // as the socket too.
    let mut kept = axum::http::Extensions::new();
    if let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        kept.insert(upgrade);
    }
    if let Ok(uri) = req.uri().to_string().parse::<axum::http::Uri>() {
        *req.uri_mut() = uri;
    }
    *req.extensions_mut() = kept;
    req
}

/// Closes every socket (clients see a server disconnect and reconnect, possibly to another
/// node) and the adapter.
fn closer<A: Adapter>(
    io: SocketIo<A>,
) -> Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send> {
    Box::new(move || Box::pin(async move { io.close().await }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, Bytes};
    use axum::extract::OriginalUri;
    use axum::http::{HeaderValue, Request, Uri, header};

    use super::own_handshake_parts;

    /// hyper's and axum's way of building a request: every part a slice of one read buffer.
    fn sliced_request(buffer: &Bytes, path: &str) -> Request<Body> {
        let text = std::str::from_utf8(buffer).unwrap();
        let at = |s: &str| {
            let start = text.find(s).unwrap();
            buffer.slice(start..start + s.len())
        };
        let uri = Uri::from_maybe_shared(at(path)).unwrap();
        let mut req = Request::builder()
            .uri(uri.clone())
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(OriginalUri(uri));
        let headers = req.headers_mut();
        headers.insert(
            header::UPGRADE,
            HeaderValue::from_maybe_shared(at("websocket")).unwrap(),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_maybe_shared(at("dGhlIHNhbXBsZQ==")).unwrap(),
        );
        let mut auth = HeaderValue::from_maybe_shared(at("Bearer xyz")).unwrap();
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        for value in ["one", "two"] {
            headers.append(
                "x-custom",
                HeaderValue::from_maybe_shared(at(value)).unwrap(),
            );
        }
        req
    }

    const PATH: &str = "/socket.io/?EIO=4&transport=websocket&token=abc";

    #[tokio::test]
    async fn socket_io_requests_let_go_of_the_read_buffer() {
        let buffer = Bytes::from(
            format!("GET {PATH} websocket dGhlIHNhbXBsZQ== Bearer xyz one two").into_bytes(),
        );
        let req = own_handshake_parts(sliced_request(&buffer, PATH)).await;
        assert!(
            buffer.is_unique(),
            "a part still points into the read buffer"
        );
        assert_eq!(req.uri(), PATH);
        assert!(
            req.extensions().get::<OriginalUri>().is_none(),
            "the router's extensions would live as long as the socket"
        );
        assert!(
            req.headers().get(header::UPGRADE).is_none(),
            "hyper has read the upgrade headers already"
        );
        assert_eq!(req.headers()[header::SEC_WEBSOCKET_KEY], "dGhlIHNhbXBsZQ==");
        let auth = &req.headers()[header::AUTHORIZATION];
        assert_eq!(auth, "Bearer xyz");
        assert!(auth.is_sensitive(), "sensitivity is kept");
        assert!(
            req.headers().get("x-custom").is_none(),
            "a header nothing reads would live as long as the socket"
        );
        assert_eq!(req.headers().len(), 2);
        assert_eq!(
            req.headers().capacity(),
            2,
            "spare slots would live as long as the socket"
        );
    }

    #[tokio::test]
    async fn other_requests_are_left_alone() {
        let path = "/api/v1/realtime/chat/rooms";
        let buffer = Bytes::from(
            format!("GET {path} websocket dGhlIHNhbXBsZQ== Bearer xyz one two").into_bytes(),
        );
        let req = own_handshake_parts(sliced_request(&buffer, path)).await;
        assert!(!buffer.is_unique(), "REST requests are not copied");
        assert_eq!(req.uri(), path);
        assert_eq!(req.headers().len(), 5);
    }
}
