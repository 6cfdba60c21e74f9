# The Riposte image: `docker build -t riposte .`
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p riposte \
 && cp target/release/riposte /riposte

# distroless/cc has glibc and CA certificates and nothing else; uid 65532 is `nonroot`.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /riposte /usr/local/bin/riposte
USER 65532:65532
EXPOSE 2746
ENTRYPOINT ["/usr/local/bin/riposte"]
CMD ["server", "--listen=0.0.0.0:2746"]
