# syntax=docker/dockerfile:1
# The disconnect-worker image: a release build of the crate on distroless.
#   docker build -t disconnect-worker .
#   docker run --rm disconnect-worker --help

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the build reads: migrations/ is embedded into the binary at
# compile time (embed_migrations!), so it is needed here and not at run time;
# crates/ holds the workspace's other members (the test kit, the benchmark),
# whose manifests cargo reads even when it builds only the worker.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
COPY build.rs ./
# Cache mounts keep downloaded crates and compiled dependencies between builds
# (BuildKit), so a source change recompiles only this crate. target/ lives in
# the cache, hence the copy out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package disconnect-worker --bin disconnect-worker \
 && cp target/release/disconnect-worker /usr/local/bin/disconnect-worker

# cc: glibc and libgcc, which a Rust binary links against, plus CA
# certificates: rustls trusts the system roots for amqps:// and for Postgres
# with sslmode=verify-ca or verify-full and no sslrootcert.
# No shell and no package manager; nonroot runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/disconnect-worker /usr/local/bin/disconnect-worker
# Numeric, so Kubernetes can check runAsNonRoot against the image itself.
USER 65532:65532
# /healthz, /readyz and /metrics (HTTP_PORT).
EXPOSE 9090
ENTRYPOINT ["disconnect-worker"]
CMD ["run"]
