# syntax=docker/dockerfile:1
# Easel in a container: `docker build -t easel .`, then `docker run -p 3000:3000 easel`
# (one node, SQLite and images in /var/lib/easel/data) or see docker-compose.yml (scale-out).

# Build on the same Debian release as the runtime image, so the binary's glibc matches.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
COPY src ./src
# The registry and target caches survive between builds (BuildKit); the binary is copied
# out of the cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin easel \
 && install -m 0755 target/release/easel /usr/local/bin/easel

FROM debian:bookworm-slim
# CA roots: HTTPS to upstream providers, S3/R2 and webhook receivers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 easel \
 && useradd --system --uid 10001 --gid easel --home-dir /var/lib/easel --create-home \
      --shell /usr/sbin/nologin easel
COPY --from=builder /usr/local/bin/easel /usr/local/bin/easel
USER easel:easel
WORKDIR /var/lib/easel
# Data folder (SQLite, local images, generated secrets) when no database URL, S3 bucket or
# secrets are configured; mount a volume here to keep it.
ENV EASEL_DATA_DIR=/var/lib/easel/data
EXPOSE 3000
ENTRYPOINT ["easel"]
CMD ["serve"]
