# syntax=docker/dockerfile:1
# The image the Helm chart runs: `docker build -t govex:0.1.0 .`
# Stage 1 builds the one binary; stage 2 is a slim Debian with only what it links
# (OpenSSL and zlib, for librdkafka's SASL/TLS and compression) and runs as a non-root user.

FROM rust:1.95.0-bookworm AS build
# rdkafka builds its bundled librdkafka with configure + make and links the system OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev perl python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin govex \
 && install -D -m 0755 target/release/govex /out/govex

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/govex /etc/govex \
 && chown 65532:65532 /var/lib/govex
COPY --from=build /out/govex /usr/local/bin/govex
# In a container the node listens on every interface; data goes to the volume.
ENV GOVEX_DATA_DIR=/var/lib/govex \
    GOVEX_LISTEN__API=0.0.0.0:8080 \
    GOVEX_LISTEN__REGISTRY=0.0.0.0:8081 \
    GOVEX_LISTEN__OPS=0.0.0.0:9464
USER 65532:65532
WORKDIR /var/lib/govex
VOLUME ["/var/lib/govex"]
EXPOSE 8080 8081 9464
ENTRYPOINT ["/usr/local/bin/govex"]
CMD ["node"]
