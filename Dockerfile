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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tend /usr/local/bin/tend
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/tend"]
