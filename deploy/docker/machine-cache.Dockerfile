# syntax=docker/dockerfile:1
# machine-cache. Build from the repository root:
#   docker build -f deploy/docker/machine-cache.Dockerfile -t emprops/machine-cache .
ARG NODE_IMAGE=node:20-bookworm-slim

# Compile the service and the libraries it references (dev dependencies: tsc, types).
FROM ${NODE_IMAGE} AS build
# better-sqlite3 is a native addon: node-gyp builds it when no prebuilt binary fits.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY services/machine-cache/package.json services/machine-cache/
RUN npm ci --workspace services/machine-cache --include-workspace-root --no-audit --no-fund
COPY libs/contracts/tsconfig.json libs/contracts/
COPY libs/contracts/src libs/contracts/src
COPY libs/platform/tsconfig.json libs/platform/
COPY libs/platform/src libs/platform/src
COPY services/machine-cache/tsconfig.json services/machine-cache/
COPY services/machine-cache/src services/machine-cache/src
RUN npx tsc -b services/machine-cache

# Production dependencies only, for the service's workspace and the libraries it links.
FROM ${NODE_IMAGE} AS deps
# better-sqlite3 is a native addon: node-gyp builds it when no prebuilt binary fits.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs/contracts/package.json libs/contracts/
COPY libs/platform/package.json libs/platform/
COPY services/machine-cache/package.json services/machine-cache/
RUN npm ci --omit=dev --workspace services/machine-cache --no-audit --no-fund

# Development image for Tilt: sources, dev dependencies and tsc, restarted by node --watch
# when live update recompiles dist/.
FROM build AS dev
ENV MACHINE_CACHE_HOST=0.0.0.0
RUN chown -R node:node /app && mkdir -p /workspace/ComfyUI/models/loras && chown -R node:node /workspace
USER node
EXPOSE 50053
CMD ["node", "--watch", "services/machine-cache/dist/main.js"]

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    MACHINE_CACHE_HOST=0.0.0.0
WORKDIR /app
COPY --from=deps /app ./
COPY --from=build /app/libs/contracts/dist libs/contracts/dist
COPY --from=build /app/libs/platform/dist libs/platform/dist
COPY --from=build /app/services/machine-cache/dist services/machine-cache/dist
COPY deploy/docker/healthcheck.js deploy/docker/healthcheck.js
# ComfyUI's directory: a node's hostPath is mounted here in Kubernetes.
RUN mkdir -p /workspace/ComfyUI/models/loras && chown -R node:node /workspace
USER node
EXPOSE 50053
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "deploy/docker/healthcheck.js", "MACHINE_CACHE_PORT", "50053"]
CMD ["node", "services/machine-cache/dist/main.js"]
