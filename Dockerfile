# cwcreds container image: a static binary on distroless, running as non-root.
#
#   docker build -t cwcreds:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run --rm --network host --env-file /etc/cwcreds/cwcreds.env \
#     -v /etc/cwcreds/api-token:/etc/cwcreds/api-token:ro -v /run/cwcreds:/run/cwcreds cwcreds:dev
#
# On Kubernetes run it as a DaemonSet on the node network: deploy/daemonset.yaml.

# Build for the target platform on the build machine's own (no emulation).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Set by BuildKit from --platform; empty (the build machine's) otherwise.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=devel
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/cwcreds ./cmd/cwcreds \
 && mkdir -p /out/run/cwcreds

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cwcreds /usr/local/bin/cwcreds
# The runtime directory for client token files, owned by the image's user
# (nonroot, 65532) so the image works without a volume; mount the host's
# /run/cwcreds over it to share the tokens with the node.
COPY --from=build --chown=65532:65532 --chmod=0750 /out/run/cwcreds /run/cwcreds
ENV CWCREDS_RUNTIME_DIR=/run/cwcreds
# Not the default 127.0.0.1:791: a non-root container cannot bind a port
# below 1024 on the host's network (it has no CAP_NET_BIND_SERVICE), which
# is how the DaemonSet runs it, so the image keeps the unprivileged 7911, as
# deploy/daemonset.yaml does. The client commands check who owns the port
# before sending a token (README "Security: local attackers").
ENV CWCREDS_LISTEN_ADDR=127.0.0.1:7911
USER 65532:65532
# Unhealthy when the daemon does not answer or a profile holds no servable
# key. The address is CWCREDS_LISTEN_ADDR, as for the daemon. (Kubernetes
# ignores HEALTHCHECK: the DaemonSet example uses probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/cwcreds", "status"]
ENTRYPOINT ["/usr/local/bin/cwcreds"]
CMD ["serve"]
