# syntax=docker/dockerfile:1
#
# UpdSpace Events (`events-svc`): build with `docker build -t updspace-events .`
# or through docker-compose.yml. Needs BuildKit (the default builder of current
# Docker) for the cache mounts below.

# ---- build ------------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src

# sqlx checks queries against `.sqlx/` (if any), never against a live database.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

COPY . .

# The cargo registry, git checkouts and target/ live in BuildKit cache mounts:
# dependencies are downloaded and compiled once and reused by later builds
# whatever changed in the sources. The binary is copied out of the cache mount
# so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin events-svc \
 && install -D -m 0755 target/release/events-svc /out/events-svc

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 events \
 && useradd --system --uid 10001 --gid events --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin events

COPY --from=build /out/events-svc /usr/local/bin/events-svc
COPY --from=build /src/migrations /app/migrations
WORKDIR /app

ENV EVENTS_HTTP_ADDR=0.0.0.0:8005 \
    EVENTS_LOG_FORMAT=json \
    RUST_LOG=info

USER 10001:10001
EXPOSE 8005

# `events-svc healthcheck` GETs http://127.0.0.1:8005/health and exits 0 or 1
# (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/events-svc", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/events-svc"]
CMD ["serve"]
