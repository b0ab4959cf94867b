# syntax=docker/dockerfile:1
#
# Outrider container image: a release build with the Swift runtime linked in statically
# (--static-swift-stdlib), on debian:bookworm-slim with only the shared libraries the binary
# loads (libssl3 for libssl and libcrypto, libnghttp2-14, libcrypt1, libstdc++6) plus the CA
# bundle for TLS origination. No shell tools are added beyond what the base image has.
#
#   docker build -t outrider:dev .
#   docker run --rm -p 15006:15006 outrider:dev                     # the zero-config sidecar
#   docker run --rm -v "$PWD/config:/etc/outrider:ro" -p 15006:15006 outrider:dev \
#       --config /etc/outrider/sidecar-proxy.yaml
#
# Pod manifests for the three roles are in config/kubernetes/ (README there).

# Builder: the official Swift image for Debian 12 (bookworm), the same Debian release as the
# runtime stage, so the libssl3 / libnghttp2-14 / libcrypt1 the binary was linked against are
# the ones it finds at run time. Package.swift says swift-tools-version 6.1: the builder must
# be Swift 6.1 or newer (development and CI use 6.3), e.g.
#   docker build --build-arg SWIFT_IMAGE=swift:6.1-bookworm .
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
# The build packages of scripts/install-deps.sh (its test and bench tools are not needed here),
# plus libcrypt-dev — libxcrypt's crypt_r for bcrypt htpasswd entries (CCrypt); libc6-dev
# usually pulls it in, it is named so the build does not depend on that. Debian package versions
# are not pinned (DL3008): bookworm's archive drops superseded versions, security fixes included,
# so a pin would break the build at the next point release; the base image tag is the pin.
# hadolint ignore=DL3008
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends libssl-dev libnghttp2-dev pkg-config libcrypt-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Manifest first, so a source change does not re-resolve the dependencies. Package.resolved is
# not in git (.gitignore): the [d] makes it optional — copied when the build context has one.
COPY Package.swift Package.resolve[d] ./
RUN swift package resolve
# Every target declared in Package.swift must have its directory, test targets included, even
# though only the outrider product is built (.dockerignore leaves out Tests/integration etc.).
COPY Sources ./Sources
COPY Tests ./Tests
# Static Swift runtime and Foundation; libssl, libcrypto, libnghttp2, libcrypt (and libstdc++,
# libgcc_s, libc) stay dynamic. Stripped of its symbol table (DESIGN: ~6 MB).
RUN swift build -c release --product outrider --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/outrider" /out/outrider \
 && strip /out/outrider \
 && /out/outrider version

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends libssl3 libnghttp2-14 libcrypt1 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# libstdc++6 is already in bookworm-slim (apt needs it); it is named so that a slimmer base
# cannot silently drop it: --static-swift-stdlib links the Swift runtime, not libstdc++.

COPY --from=build /out/outrider /usr/local/bin/outrider

# Non-root, numeric (so Kubernetes' runAsNonRoot can check it): 65532, the "nonroot" uid of
# distroless images; it needs no /etc/passwd entry. Nothing is written to the filesystem (logs
# go to stdout/stderr), so the root filesystem can be mounted read-only. The base image's
# /bin/sh and coreutils are still there; the Kubernetes manifests do not rely on them (no exec
# probes, no `sleep` preStop), so they would work unchanged on a shell-less base image.
USER 65532:65532

# 15000 admin (/live /ready /metrics), 15001 ambassador (outbound), 15006 sidecar (inbound).
# The auth-container role listens on 4180; EXPOSE is documentation only.
EXPOSE 15000 15001 15006

# No OUTRIDER_CONFIG default: without --config (and without OUTRIDER_CONFIG) Outrider is the
# zero-config sidecar (SPEC §1), 0.0.0.0:15006 → 127.0.0.1:8080, admin on 127.0.0.1:15000.
# Pass `--config FILE` (the Kubernetes manifests do) or set OUTRIDER_CONFIG to use a file.
# SIGTERM starts the drain (drain.delay, then drain.timeout) and exit 0; outrider is PID 1
# here and handles SIGTERM/SIGINT/SIGHUP itself, so no init wrapper is needed.
ENTRYPOINT ["outrider"]
