# One image for the control worker and the HTTP API (the host worker runs on each appliance,
# next to dmsetup and the NBD server, not in a container).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY src ./src
COPY workflows ./workflows
COPY activities ./activities
COPY tsconfig.json ./
USER node
CMD ["npx", "tsx", "src/worker/control-main.ts"]
