# The container image of tally: built from source in an official Rust image, run on distroless
# `cc` as the non-root user 65532 (no shell, no package manager).
#
#   docker build -t tally .
#
# The base images are build arguments, so the same file builds from mirrors or local stand-ins
# (scripts/docker.sh builds it that way on machines without a registry):
#   docker build --build-arg RUST_IMAGE=my-mirror/rust:1-bookworm \
#                --build-arg RUNTIME_IMAGE=my-mirror/distroless-cc:nonroot -t tally .
# The runtime image must be glibc-based (Debian 12 or newer) like the builder.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
# Dependencies first, in a layer that changes only with the manifests and the lock file: a change
# to the sources rebuilds tally alone.
COPY Cargo.toml Cargo.lock ./
COPY crates/tally/Cargo.toml crates/tally/
RUN mkdir -p crates/tally/src \
    && echo 'fn main() {}' > crates/tally/src/main.rs \
    && touch crates/tally/src/lib.rs \
    && cargo build --release --locked -p tally \
    && rm -rf crates/tally/src
COPY crates/ crates/
# The real sources are older than the placeholder build: touch them so cargo rebuilds tally.
RUN find crates/tally/src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p tally \
    && install -D -m 0755 target/release/tally /out/tally \
    && /out/tally --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="tally" \
      org.opencontainers.image.description="A per-id counter service on Redis that proves its claims" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tally /usr/local/bin/tally
USER 65532:65532
# 8080: the counter API; 8081: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["serve"]
