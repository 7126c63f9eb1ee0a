# Rill in a container: docker build -t rill . && docker run -p 8080:8080 -v rill-data:/data \
#   -e RILL_AUTH__JWT__SECRET="$(openssl rand -base64 32)" rill
# docs/deploy/README.md explains the settings; docs/deploy/docker/compose.yaml adds Redis.

# Build stage: the whole source tree, built and packed by docs/deploy/docker/build.sh (the same
# script a test runs on a clean copy of the repository), into /opt/rill.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY . .
RUN sh docs/deploy/docker/build.sh /opt/rill

# Run stage: Node and /opt/rill only, as the unprivileged `node` user of the image.
FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    RILL_HOST=0.0.0.0 \
    RILL_PORT=8080 \
    RILL_DATA_DIR=/data
COPY --from=build /opt/rill /opt/rill
RUN mkdir -p /data && chown node:node /data
USER node
WORKDIR /data
# The lmdb engine's log: keep it on a volume so it outlives the container.
VOLUME ["/data"]
EXPOSE 8080
# /readyz answers 200 once Rill serves and its engine is reachable, 503 while shutting down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.RILL_PORT}/readyz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) shuts Rill down gracefully; give it more than shutdownTimeout (10 s):
# docker stop -t 15.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/opt/rill/node_modules/@rill/server/bin/rill.js"]
CMD ["serve"]
