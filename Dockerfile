# Multi-stage build: a Rust builder, then a slim Debian runtime with the two binaries and the conf.
FROM rust:1.95-bookworm AS build
# cmake for OpenSSL; BOLT, wrk and h2load for the gateway's code layout (scripts/bolt.sh).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake bolt-19 wrk nghttp2-client \
    && rm -rf /var/lib/apt/lists/*
# llvm-profdata, which merges the compiler's profile.
RUN rustup component add llvm-tools
WORKDIR /src
# Dependencies first, in a layer of their own that survives source changes: built instrumented,
# with the flags of scripts/bolt.sh's instrumented build (its profile-guided build compiles them
# again from the profile, which changes with the source).
COPY Cargo.toml Cargo.lock ./
# pingora-core, pingora-http and pingora-proxy with the gateway's patches (see
# vendor/README.md). OpenSSL is built from source (vendored, static): the runtime image needs no
# libssl.
COPY vendor vendor
RUN mkdir -p src mock benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > mock/main.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && RUSTFLAGS="-Cprofile-generate=/src/target/pgo" \
       cargo build --release --locked --bins --target-dir target/pgo-generate \
    && rm -rf src mock benches
COPY src src
COPY mock mock
COPY benches benches
COPY scripts/bolt.sh scripts/
# The gateway compiled from a profile of a training run on the builder's loopback, then laid
# out by BOLT from another: about a quarter less CPU a request than the plain build
# (docs/performance.md); the run checks that the result serves every request.
RUN touch src/main.rs src/lib.rs mock/main.rs && bash scripts/bolt.sh --pgo

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /src/target/release/gateway-bolt /usr/local/bin/gateway
COPY --from=build /src/target/pgo-use/gateway/release/mock-backend /usr/local/bin/
COPY conf/ /etc/gateway/
USER gateway
# The proxy, its TLS listener when a conf configures one (gateway.tls), and the admin
# listener, once a conf binds it off loopback (see compose.yaml).
EXPOSE 8080 8443 9091
# Exec form: the gateway is PID 1 and receives SIGTERM itself (it drains for grace_period_seconds).
ENTRYPOINT ["/usr/local/bin/gateway", "-c", "/etc/gateway/gateway.yaml"]
