import { type Dispatcher, request } from "undici";

export type ConnectJsonCall = (method: string, body: unknown) => Promise<{ ms: number; json: Record<string, unknown> }>;

/**
 * Connect unary calls as JSON over HTTP/1.1 with keep-alive: how ComfyUI's
 * node posts to the machine cache. `method` is "package.Service/Method".
 */
export function connectJson(baseUrl: string, token: string, dispatcher: Dispatcher): ConnectJsonCall {
  return async (method, body) => {
    const started = performance.now();
    const res = await request(`${baseUrl}/${method}`, {
      method: "POST",
      dispatcher,
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
      headersTimeout: 600_000,
      bodyTimeout: 600_000,
    });
    const json = (await res.body.json()) as Record<string, unknown>;
    const ms = performance.now() - started;
    if (res.statusCode !== 200) throw new Error(`${method}: HTTP ${res.statusCode} ${JSON.stringify(json)}`);
    return { ms, json };
  };
}
