import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { LoraService } from "@emprops/contracts";

export type LoraClient = Client<typeof LoraService>;

/** The registry's LoraService over Connect-Web, as the Studio calls it: JSON over fetch with the user's token. */
export function createLoraClient(registryUrl: string, token: () => string | undefined): LoraClient {
  const auth: Interceptor = (next) => (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
  return createClient(LoraService, createConnectTransport({ baseUrl: registryUrl, interceptors: [auth] }));
}
