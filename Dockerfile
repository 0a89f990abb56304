# dqpipe: a multi-stage build, a small runtime image, a non-root numeric user.
#   docker build -t dqpipe:0.1.0 .
#   docker run --rm dqpipe:0.1.0 validate /pipelines/nats-historical.yaml
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The `dist` profile: fat LTO, one codegen unit (Cargo.toml says what it costs and gains).
RUN cargo build --profile dist --locked --bin dqpipe \
 && strip target/dist/dqpipe

FROM debian:bookworm-slim
# CA certificates for S3 and the Slack webhook over TLS; nothing else is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/dist/dqpipe /usr/local/bin/dqpipe
COPY pipelines /pipelines
USER 10001:10001
WORKDIR /scratch
# dqpipe runs as PID 1 and handles SIGTERM itself (it stops listing, gives items in flight
# DQPIPE_GRACE_SECS to finish, writes its report and exits), so no init is needed.
ENTRYPOINT ["/usr/local/bin/dqpipe"]
CMD ["--help"]
