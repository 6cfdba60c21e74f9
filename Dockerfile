# The Riposte image: `docker build -t ghcr.io/riposte/riposte:v$(cargo pkgid -p riposte | cut -d# -f2) .`
# (deploy/ and the step wrapper default expect the tag of this version).
#
# The binary is static (musl): the same file runs the server here and, copied by the init
# container of every step (`riposte install-wrapper`), runs as the step wrapper inside
# whatever image the step uses — alpine (musl), debian (glibc) or distroless alike.
FROM rust:1-bookworm AS build
# The build stage runs on the image's own platform (amd64 or arm64 with buildx), so the
# musl target is this machine's architecture.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# ring and the bundled SQLite compile C: with musl's compiler wrapper.
ENV TARGET_CC=musl-gcc
RUN target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked -p riposte --target "$target" \
 && cp "target/$target/release/riposte" "target/$target/release/riposte-exec" /

# distroless/static: CA certificates, /etc/passwd with uid 65532 `nonroot`, no libc needed.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /riposte /usr/local/bin/riposte
# The small step wrapper the host executor runs detached steps under (found beside riposte).
COPY --from=build /riposte-exec /usr/local/bin/riposte-exec
USER 65532:65532
EXPOSE 2746
ENTRYPOINT ["/usr/local/bin/riposte"]
CMD ["server", "--listen=0.0.0.0:2746"]
