# syntax=docker/dockerfile:1
# lora-registry. Build from the repository root:
#   docker build -f deploy/docker/lora-registry.Dockerfile -t emprops/lora-registry .
ARG NODE_IMAGE=node:20-bookworm-slim

# Compile the service and the libraries it references (dev dependencies: tsc, types).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY services/lora-registry/package.json services/lora-registry/
RUN npm ci --workspace services/lora-registry --include-workspace-root --no-audit --no-fund
COPY libs/contracts/tsconfig.json libs/contracts/
COPY libs/contracts/src libs/contracts/src
COPY libs/platform/tsconfig.json libs/platform/
COPY libs/platform/src libs/platform/src
COPY services/lora-registry/tsconfig.json services/lora-registry/
COPY services/lora-registry/src services/lora-registry/src
RUN npx tsc -b services/lora-registry

# Production dependencies only, for the service's workspace and the libraries it links.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY services/lora-registry/package.json services/lora-registry/
RUN npm ci --omit=dev --workspace services/lora-registry --no-audit --no-fund

# Development image for Tilt: sources, dev dependencies and tsc, restarted by node --watch
# when live update recompiles dist/.
FROM build AS dev
ENV REGISTRY_HOST=0.0.0.0
RUN chown -R node:node /app
USER node
EXPOSE 50051
CMD ["node", "--watch", "services/lora-registry/dist/main.js"]

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    REGISTRY_HOST=0.0.0.0
WORKDIR /app
COPY --from=deps /app ./
COPY --from=build /app/libs/contracts/dist libs/contracts/dist
COPY --from=build /app/libs/platform/dist libs/platform/dist
COPY --from=build /app/services/lora-registry/dist services/lora-registry/dist
COPY deploy/docker/healthcheck.js deploy/docker/healthcheck.js
USER node
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "deploy/docker/healthcheck.js", "REGISTRY_PORT", "50051"]
CMD ["node", "services/lora-registry/dist/main.js"]
