export { loadConfig, type GatewayConfig } from "./config.js";
export { startBlobGateway, type RunningGateway } from "./service.js";
export { type AppContext } from "./context.js";
