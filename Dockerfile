# syntax=docker/dockerfile:1
#
# Switchboard container image.
#
# Four stages, cargo-chef style: `planner` reduces the workspace to a recipe of its manifests
# and lockfile, `cacher` compiles only the dependencies from that recipe, `builder` compiles our
# own crates on top, and `runtime` carries just the binary. Editing code under src/, entity/ or
# migration/ leaves the recipe unchanged, so rebuilds reuse the cached dependency layer and only
# recompile the workspace's own crates.
#
#   docker build -t switchboard .
#   docker run --rm -p 3000:3000 -v switchboard-data:/data switchboard
#
# Builder and runtime are both Debian bookworm, so the binary links against the same glibc it
# was built with. The rustls TLS stack and the bundled SQLite are compiled in, so the runtime
# needs no OpenSSL or libsqlite3.

# The same Rust toolchain must be used in every build stage, or cargo-chef's cache misses.
ARG CHEF_IMAGE=lukemathwalker/cargo-chef:latest-rust-1.95-slim-bookworm

FROM ${CHEF_IMAGE} AS chef
WORKDIR /app

# ---- planner: compute the dependency recipe --------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- cacher: build only the dependencies (this layer is the cache) ---------------------------
FROM chef AS cacher
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin switchboard

# ---- builder: build the workspace on top of the cooked dependencies ---------------------------
# `cargo chef cook` and `cargo build` must run in the same directory with the same profile and
# flags, otherwise cargo does not recognise the cached artifacts.
FROM cacher AS builder
COPY . .
RUN cargo build --release --locked --bin switchboard

# ---- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: the system trust store, for anything that verifies TLS against it (the
#   database driver currently ships its own webpki roots, so this is a safety net).
# curl: only for the HEALTHCHECK below.
# Not version-pinned (DL3008): bookworm's archive drops superseded versions as security updates
# land, so pins break rebuilds; the base image tag is the pin that matters.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid, so volume ownership and Kubernetes `runAsUser` policies can
# refer to it.
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data \
    && chown switchboard:switchboard /data

COPY --from=builder /app/target/release/switchboard /usr/local/bin/switchboard

# The working directory is where the default DATABASE_URL (`sqlite://switchboard.db?mode=rwc`)
# creates its file, so mount a volume here to keep a single node's SQLite data across restarts.
WORKDIR /data
USER 10001:10001

ENV HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json

EXPOSE 3000

# /health answers 503 when the database or Redis is unreachable, which marks the container
# unhealthy. The start period leaves time for migrations on first start. Shell form on purpose
# (DL3025), so that ${PORT} follows a PORT overridden at `docker run -e PORT=...`.
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" || exit 1

# Exec form: switchboard runs as PID 1 and receives SIGTERM from `docker stop` directly, so it can
# drain sockets within SHUTDOWN_TIMEOUT_MS. Keep the orchestrator's stop timeout above that.
ENTRYPOINT ["switchboard"]
CMD ["serve"]
