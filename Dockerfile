# The control side's image: the control worker, the HTTP API and the migrations, from the same
# release build as the tarball (scripts/build --stage: compiled JavaScript, production
# dependencies only, the workflow bundle prebuilt). The host worker runs on each appliance,
# next to dmsetup and nbdkit, from the tarball (packaging/README.md), not in a container.
#   docker build --build-arg VERSION=0.1.0 -t volume-lifecycle:0.1.0 .
#   docker run volume-lifecycle:0.1.0 --version
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY . .
# No .git in the build context (.dockerignore): the version comes from here, or package.json.
ARG VERSION=
RUN VERSION="${VERSION}" ./scripts/build --stage /app --no-node

FROM node:20-bookworm-slim
ENV NODE_ENV=production
COPY --from=build /app /app
WORKDIR /app
# Non-root: the control worker and the API need nothing but the network.
USER node
# Workers: their Temporal metrics (WORKER_METRICS_ADDRESS) show pollers running; the API sets
# HEALTHCHECK_URL to its /health (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "/app/src/cli/service.js", "healthcheck"]
ENTRYPOINT ["node", "/app/src/cli/service.js"]
CMD ["control-worker"]
