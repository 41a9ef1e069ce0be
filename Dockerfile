# One image for every BandSync service; the command picks which one runs.
# Build: docker build -t bandsync .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bandsync-gateway -p bandsync-ticker -p bandsync-store \
 && cp target/release/bandsync-gateway target/release/bandsync-ticker target/release/bandsync-store /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 bandsync
COPY --from=build /usr/local/bin/bandsync-* /usr/local/bin/
USER bandsync
