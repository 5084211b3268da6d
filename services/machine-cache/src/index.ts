export { loadConfig, type MachineCacheConfig } from "./config.js";
export { startMachineCache, type RunningMachineCache } from "./service.js";
export { type AppContext } from "./context.js";
