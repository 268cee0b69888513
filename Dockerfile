# Multi-stage build of tend for users who build with Docker. tend's own
# release path does not need Docker: see docs/releasing.md.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -buildid= -X tend.dev/tend/internal/version.Version=${VERSION}" \
      -o /out/tend ./cmd/tend

# restic runs the cluster's Backups (docs/backups.md). Debian's build links
# glibc, so the final image is distroless/base, not static.
FROM debian:bookworm-slim AS restic
RUN apt-get update && apt-get install -y --no-install-recommends restic && rm -rf /var/lib/apt/lists/*

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/tend /usr/local/bin/tend
COPY --from=restic /usr/bin/restic /usr/bin/restic
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/tend"]
