# Trading Lab's services in one image: build stage compiles the four binaries, the runtime stage
# carries them with curl (for healthchecks). docker-compose.yml runs each service from it.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p matcher -p order-svc -p gateway -p market-sim --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/matcher /src/target/release/order-svc /src/target/release/gateway \
     /src/target/release/market-sim /usr/local/bin/
USER nobody
