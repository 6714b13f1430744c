# syntax=docker/dockerfile:1
# ldapgate in a container: a static binary on distroless, run as non-root.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t ldapgate .
#   docker run -d --name ldapgate \
#     -v /etc/ldapgate:/etc/ldapgate:ro -v ldapgate-data:/var/lib/ldapgate \
#     -p 389:3389 -p 127.0.0.1:9389:9389 ldapgate
#
# The configuration is /etc/ldapgate/ldapgate.yaml (packaging/ldapgate.yaml
# is the commented example); listen on ports above 1024 inside the
# container and publish them as 389/636. The volume on /var/lib/ldapgate
# holds the journal: keep it across container upgrades.

# Build: the same command `make deb` runs (packaging/packaging.mk,
# SHIP_BUILD): static, trimmed, stripped, version stamped.
FROM golang:1.26-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ldapgate ./cmd/ldapgate \
 && mkdir -p /out/data

# Run: no shell, no package manager; uid/gid 65532 (nonroot).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ldapgate /usr/bin/ldapgate
COPY packaging/ldapgate.yaml /etc/ldapgate/ldapgate.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/ldapgate
USER 65532:65532
VOLUME ["/var/lib/ldapgate"]
EXPOSE 3389 3636 9389
ENTRYPOINT ["/usr/bin/ldapgate"]
CMD ["serve", "--config", "/etc/ldapgate/ldapgate.yaml", "--data-dir", "/var/lib/ldapgate", "--admin-listen", "0.0.0.0:9389"]
