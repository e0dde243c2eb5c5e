# syntax=docker/dockerfile:1
#
# pytorchjob-guard container image: a static-ish Rust binary on distroless (glibc, CA
# certificates, no shell, no package manager), running as the unprivileged `nonroot` user.
#
#   docker build -t ghcr.io/pytorchjob-guard/pytorchjob-guard:0.1.0 .
#
# Keep the tag equal to Cargo.toml's version and to the image in manifests/base/deployment.yaml
# (tests/manifests.rs checks the latter).

# ---- build ------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Shown by the pytorchjob_guard_build_info metric: `--build-arg GIT_COMMIT=$(git rev-parse HEAD)`.
ARG GIT_COMMIT=unknown
ENV PYTORCHJOB_GUARD_GIT_COMMIT=${GIT_COMMIT}
# The whole context (see .dockerignore): Cargo.toml may name targets anywhere in the tree, and
# cargo refuses a manifest whose targets are missing.
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit). The
# binary is copied out of the cache mount, which does not persist into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/pytorchjob-guard /out/pytorchjob-guard

# ---- runtime ----------------------------------------------------------------------------------
# cc-debian12: glibc and libgcc, which a Rust binary links dynamically; nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pytorchjob-guard /usr/local/bin/pytorchjob-guard
# 65532 = `nonroot` in distroless; the Deployment's runAsUser and fsGroup use the same ID.
USER 65532:65532
# Where the Deployment mounts the Secret, so the image's defaults match the manifests.
# Flags win over these (the Deployment passes the same values as flags, explicitly).
ENV PYTORCHJOB_GUARD_TLS_CERT=/certs/tls.crt \
    PYTORCHJOB_GUARD_TLS_KEY=/certs/tls.key \
    PYTORCHJOB_GUARD_LOG_FORMAT=json
# The binary's default listen addresses: HTTPS 0.0.0.0:8443 (the webhook; the Service targets
# it by name) and plain HTTP 0.0.0.0:9090 (/metrics).
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/pytorchjob-guard", "serve"]
