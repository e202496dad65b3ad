# syntax=docker/dockerfile:1
# weir images: one build, one runtime base, two images that differ only in their entrypoint.
#
#   docker build --target weir          -t ghcr.io/weir/weir:0.1.0 .
#   docker build --target weir-operator -t ghcr.io/weir/weir-operator:0.1.0 .
#
# Both images carry both binaries (a few MB more each) so that one base layer is shared and a
# worker image can also run `weir-operator crds`, and the operator image `weir validate`.
# The e2e test kubelet (e2e/) reads this file: an image named …/weir or …/weir-operator runs the
# ENTRYPOINT/CMD of the stage of that name, so tests run exactly what these images run.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# cmake builds librdkafka (rdkafka's cmake-build feature); libssl-dev for its TLS support.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir-runtime --bin weir -p weir-operator --bin weir-operator \
 && mkdir -p /out \
 && cp target/release/weir target/release/weir-operator /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# CA certificates for TLS to Kafka, S3 and the API server; libssl3 is linked by librdkafka.
# /bin/sh stays: the operator starts workers through a small sh wrapper.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 weir \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/weir --create-home --shell /usr/sbin/nologin weir
COPY --from=build /out/weir /out/weir-operator /usr/local/bin/
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/weir

FROM runtime AS weir-operator
ENTRYPOINT ["weir-operator"]
CMD ["run"]

# The worker image (the default target, last).
FROM runtime AS weir
ENTRYPOINT ["weir"]
CMD ["--help"]
