/** What the server hosting the page says about its environment. */
export interface PageConfig {
  /** lora-registry, reached with Connect-Web. */
  registryUrl: string;
}

/** Reads config.json next to the page. */
export async function loadConfig(): Promise<PageConfig> {
  const res = await fetch(new URL("config.json", document.baseURI), { cache: "no-store" });
  if (!res.ok) throw new Error(`config.json could not be loaded (HTTP ${res.status})`);
  const config = (await res.json()) as Partial<PageConfig>;
  if (typeof config.registryUrl !== "string" || config.registryUrl === "") {
    throw new Error("config.json names no registryUrl");
  }
  return { registryUrl: config.registryUrl.replace(/\/+$/, "") };
}
