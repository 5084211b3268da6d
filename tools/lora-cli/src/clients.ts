import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraAdminService, LoraService } from "@emprops/contracts";

export interface RegistryClients {
  lora: Client<typeof LoraService>;
  admin: Client<typeof LoraAdminService>;
}

/** Connect (JSON over HTTP/1.1) clients of lora-registry: the protocol a browser or proxy also speaks. */
export function createRegistryClients(registryUrl: string, token: string | undefined): RegistryClients {
  const auth: Interceptor = (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl: registryUrl, httpVersion: "1.1", interceptors: [auth] });
  return { lora: createClient(LoraService, transport), admin: createClient(LoraAdminService, transport) };
}
