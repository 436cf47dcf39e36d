# Quire in a container: a build stage with the Rust toolchain, a small runtime stage with the
# OCR and PDF tools Quire calls, running as a non-root user with the database on a volume.
#   docker build -t quire . && docker run -p 8080:8080 -v quire-data:/data quire
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The flags the bundled SQLite is built with (see .cargo/config.toml).
COPY .cargo ./.cargo
COPY migrations ./migrations
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin quire

FROM debian:bookworm-slim
# Debian's stable packages are the pinned set: pinning exact versions breaks on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tesseract-ocr poppler-utils \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin quire \
    && mkdir -p /data && chown quire:quire /data
COPY --from=build /src/target/release/quire /usr/local/bin/quire
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENV QUIRE_DB=/data/quire.db QUIRE_HOST=0.0.0.0 QUIRE_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/quire"]
CMD ["serve"]
