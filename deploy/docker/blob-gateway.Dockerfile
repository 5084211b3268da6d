# syntax=docker/dockerfile:1
# blob-gateway. Build from the repository root:
#   docker build -f deploy/docker/blob-gateway.Dockerfile -t emprops/blob-gateway .
ARG NODE_IMAGE=node:20-bookworm-slim

# Compile the service and the libraries it references (dev dependencies: tsc, types).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY libs/lora-formats/package.json libs/lora-formats/
COPY services/blob-gateway/package.json services/blob-gateway/
RUN npm ci --workspace services/blob-gateway --include-workspace-root --no-audit --no-fund
COPY libs/contracts/tsconfig.json libs/contracts/
COPY libs/contracts/src libs/contracts/src
COPY libs/platform/tsconfig.json libs/platform/
COPY libs/platform/src libs/platform/src
COPY libs/lora-formats/tsconfig.json libs/lora-formats/
COPY libs/lora-formats/src libs/lora-formats/src
COPY services/blob-gateway/tsconfig.json services/blob-gateway/
COPY services/blob-gateway/src services/blob-gateway/src
RUN npx tsc -b services/blob-gateway

# Production dependencies only, for the service's workspace and the libraries it links.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY libs/lora-formats/package.json libs/lora-formats/
COPY services/blob-gateway/package.json services/blob-gateway/
RUN npm ci --omit=dev --workspace services/blob-gateway --no-audit --no-fund

# Development image for Tilt: sources, dev dependencies and tsc, restarted by node --watch
# when live update recompiles dist/.
FROM build AS dev
ENV GATEWAY_HOST=0.0.0.0
RUN chown -R node:node /app
USER node
EXPOSE 50052
CMD ["node", "--watch", "services/blob-gateway/dist/main.js"]

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    GATEWAY_HOST=0.0.0.0
WORKDIR /app
COPY --from=deps /app ./
COPY --from=build /app/libs/contracts/dist libs/contracts/dist
COPY --from=build /app/libs/platform/dist libs/platform/dist
COPY --from=build /app/libs/lora-formats/dist libs/lora-formats/dist
COPY --from=build /app/services/blob-gateway/dist services/blob-gateway/dist
COPY deploy/docker/healthcheck.js deploy/docker/healthcheck.js
USER node
EXPOSE 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "deploy/docker/healthcheck.js", "GATEWAY_PORT", "50052"]
CMD ["node", "services/blob-gateway/dist/main.js"]
