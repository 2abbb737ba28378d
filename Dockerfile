# meshid's images: static binaries on a base without a shell.
#
# Users build them from source (a Go builder stage, CGO_ENABLED=0):
#
#	docker build -t meshid:dev .                                  # meshid
#	docker build --target demoapp -t meshid-demoapp:dev .         # the compose mesh's app
#
# (`docker compose build` in compose/ does both.) Machines that cannot pull
# images build them FROM scratch around binaries built on the host, as
# `make image` does:
#
#	CGO_ENABLED=0 go build -o bin/static/ ./cmd/meshid ./test/demoapp
#	podman build --build-arg BINARY=context --build-arg BASE_IMAGE=scratch -t meshid:dev .
#
# BINARY names the stage the binaries come from: "builder" (compiled here)
# or "context" (bin/static/ of the build context). Only the stages the
# target needs are built, so with BINARY=context nothing is pulled.
ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12
ARG BINARY=builder

FROM ${GO_IMAGE} AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/meshid ./test/demoapp

FROM scratch AS context
COPY bin/static/meshid bin/static/demoapp /out/

FROM ${BINARY} AS binary

# The demo mesh's workload (test/demoapp): it holds no identity, its
# sidecar does, so it runs as an unprivileged user.
FROM ${BASE_IMAGE} AS demoapp
COPY --from=binary /out/demoapp /usr/local/bin/demoapp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/demoapp"]

# meshid, the default target. It runs as root: with pid: host it attests
# processes of other containers, and reads their /proc entries.
FROM ${BASE_IMAGE} AS meshid
COPY --from=binary /out/meshid /usr/local/bin/meshid
USER 0:0
ENTRYPOINT ["/usr/local/bin/meshid"]
CMD ["run", "-config", "/etc/meshid/meshid.yaml"]
