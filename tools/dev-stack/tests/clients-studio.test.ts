import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraAdminService, LoraService, LoraSource, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import {
  blobEndpointOf,
  buildSafetensors,
  callPickle,
  eventually,
  kohyaMetadata,
  loraTensors,
  putBlockIndex,
  testImage,
  torchZip,
  writeLoraFile,
} from "@emprops/testkit";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { startStudioServer, type StudioServer } from "../src/studio-server.js";
import { findChromium } from "./support/chromium.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const APP = path.join(ROOT, "apps", "studio-lora-library");
const ARTIFACTS = path.join(ROOT, "test-artifacts");
const MiB = 1024 * 1024;

describe("the Studio LoRA library page in Chromium against the real stack", () => {
  let t: TestStack;
  let studio: StudioServer;
  let browser: BrowserContext;
  let page: Page;
  let dir = "";
  let registryUrl = "";
  const sha: Record<string, string> = {};

  const client = (token: string) =>
    createConnectTransport({
      baseUrl: t.stack.registry.url,
      httpVersion: "1.1",
      interceptors: [bearerInterceptor(token)],
    });
  const card = (name: string) => page.locator(`article.card[aria-label="${name}"]`);
  const upload = (name: string) => page.locator(`li.upload[data-file="${name}"]`);
  const cardNames = () => page.locator("article.card .card-name").allTextContents();
  /** What a person reads: the element's lines, trimmed, without blank ones. */
  const text = async (l: Locator) =>
    (await l.innerText())
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "")
      .join("\n");

  const file = (name: string, sizeBytes: number) => {
    const f = path.join(dir, name);
    sha[name] = writeLoraFile(f, sizeBytes, kohyaMetadata(name.replace(/\.safetensors$/, "")));
    return f;
  };
  const choose = async (files: string[], tags = "") => {
    await page.getByLabel("Tags for new uploads").fill(tags);
    await page.getByTestId("file-input").setInputFiles(files);
  };
  const waitPhase = (name: string, phase: string) =>
    upload(name)
      .and(page.locator(`[data-phase="${phase}"]`))
      .waitFor();
  /** Waits until the grid shows exactly these cards, in this order. */
  const waitGrid = (names: string[]) =>
    page.waitForFunction(
      `JSON.stringify([...document.querySelectorAll("article.card .card-name")].map((n) => n.textContent)) === ${JSON.stringify(JSON.stringify(names))}`,
    );
  const shot = async (name: string, fullPage = true) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage });
  };

  beforeAll(async () => {
    const chromiumBinary = await findChromium();
    console.log(`Studio page test: Chromium from ${chromiumBinary.source} (${chromiumBinary.executablePath})`);
    dir = mkdtempSync(path.join(os.tmpdir(), "studio-"));
    const out = path.join(dir, "page");
    await promisify(execFile)(
      process.execPath,
      [
        path.join(ROOT, "node_modules/vite/bin/vite.js"),
        "build",
        "--outDir",
        out,
        "--emptyOutDir",
        "--logLevel",
        "warn",
      ],
      { cwd: APP },
    );
    // The picker's own bundle, next to the page, as `npm run build` lays it out.
    await promisify(execFile)(
      process.execPath,
      [
        path.join(ROOT, "node_modules/vite/bin/vite.js"),
        "build",
        "-c",
        "vite.picker.config.mts",
        "--outDir",
        path.join(out, "picker"),
        "--emptyOutDir",
        "--logLevel",
        "warn",
      ],
      { cwd: APP },
    );
    // A plain host page, as a workflow editor would embed it: one script, one element (written before the
    // server starts: it serves the files it finds then).
    writeFileSync(
      path.join(out, "host.html"),
      `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
       <script type="module" src="picker/emprops-lora-picker.js"></script></head>
       <body style="margin:16px;font-family:sans-serif"><h1>Workflow editor</h1>
       <emprops-lora-picker id="picker" base-model="sd_v1-5-pruned.safetensors"></emprops-lora-picker>
       <script>window.added = []; document.addEventListener("lora-add", (e) => window.added.push(e.detail));</script>
       </body></html>`,
    );
    // The page's origin first: the registry and Blob Storage allow exactly it (CORS).
    studio = await startStudioServer({ dir: out, config: () => ({ registryUrl }) });
    t = await startTestStack("clients-studio", {
      env: {
        registry: { CORS_ALLOWED_ORIGINS: studio.origin },
        gateway: { STORAGE_CORS_ALLOWED_ORIGINS: studio.origin, UPLOAD_BLOCK_SIZE_BYTES: String(MiB) },
        machineCache: { USAGE_FLUSH_INTERVAL_SECONDS: "1" },
      },
    });
    registryUrl = t.stack.registry.url;
    browser = await chromium.launchPersistentContext(path.join(dir, "profile"), {
      executablePath: chromiumBinary.executablePath,
      env: { ...process.env, ...chromiumBinary.env },
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Containers often have a small /dev/shm.
        "--disable-dev-shm-usage",
      ],
      viewport: { width: 1200, height: 860 },
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(20_000);
    // A script error on the page is a test failure's best clue.
    page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
    await studio?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the registry and Blob Storage answer preflights of the Studio's origin, and only of it", async () => {
    const preflight = (url: string, origin: string, method: string, headers: string) =>
      fetch(url, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
      });
    const connectHeaders = "authorization,content-type,connect-protocol-version,traceparent";
    const rpc = `${t.stack.registry.url}/emprops.lora.v1.LoraService/ListLoras`;
    const ok = await preflight(rpc, studio.origin, "POST", connectHeaders);
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(studio.origin);
    expect(ok.headers.get("access-control-allow-headers")).toMatch(/Authorization/);
    expect(ok.headers.get("access-control-allow-headers")).toMatch(/Connect-Protocol-Version/);
    expect(ok.headers.get("access-control-allow-headers")).toMatch(/Traceparent/);
    const evil = await preflight(rpc, "http://evil.example", "POST", connectHeaders);
    expect(evil.status).toBe(403);
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();

    const blobUrl = `${blobEndpointOf(t.containers.connectionString)}/${t.containers.userContainer}/x`;
    const put = await preflight(blobUrl, studio.origin, "PUT", "content-type,x-ms-blob-content-type");
    expect(put.status).toBe(200);
    expect(put.headers.get("access-control-allow-origin")).toBe(studio.origin);
    expect((await preflight(blobUrl, "http://evil.example", "PUT", "content-type")).status).toBe(403);
  });

  test("signs in with the token in the fragment; an upload shows its progress, then the LoRA with its metadata", async () => {
    // Without a token the page says how to mint one, as the README does.
    await page.goto(studio.url);
    await page.getByText("npm run -s mint-token -- --sub <user uuid>", { exact: true }).waitFor();
    // The sign-in link opened in this same tab changes only the fragment: no reload, the page still signs in.
    await page.evaluate(`location.hash = "#token=${t.userToken}"`);
    await page.getByTestId("quota-usage").filter({ hasText: "0 B of 10.0 GiB (0.0%)" }).waitFor();
    expect(page.url()).not.toContain("token=");
    await page.getByText("No LoRAs yet").waitFor();
    await shot("studio-empty");

    // Every progress bar the page draws, as drawn (the page's own code, not the test's, sets the values).
    await page.evaluate(`(() => {
      const seen = (window.progress = []);
      new MutationObserver((records) => {
        for (const r of records)
          for (const n of r.addedNodes)
            if (n instanceof HTMLElement)
              for (const bar of [n, ...n.querySelectorAll("[role=progressbar]")])
                if (bar.matches("[role=progressbar]")) seen.push(Number(bar.getAttribute("aria-valuenow")));
      }).observe(document.body, { childList: true, subtree: true });
    })()`);
    // Block 3 waits until the page has been photographed mid-upload.
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route(
      (url) => putBlockIndex(url) === 3,
      async (route) => {
        await held;
        await route.continue();
      },
    );
    await choose([file("anime_style.safetensors", 3.5 * MiB)], "style, anime, cel-shaded");
    await waitPhase("anime_style.safetensors", "uploading");
    await page.waitForFunction(
      `Number(document.querySelector('li.upload [role=progressbar]')?.getAttribute("aria-valuenow")) >= 50`,
    );
    await shot("studio-uploading");
    release();
    await waitPhase("anime_style.safetensors", "done");
    await page.unrouteAll();
    // The tag box keeps its label, and its tags went with that upload only.
    expect(await page.getByLabel("Tags for new uploads").inputValue()).toBe("");
    await page.getByText("Tags for new uploads", { exact: true }).waitFor();
    const progress = await page.evaluate<number[]>("window.progress");
    expect(progress.some((p) => p > 0 && p < 100)).toBe(true);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(progress.at(-1)).toBe(100);
    expect(await text(upload("anime_style.safetensors"))).toMatch(
      /Uploaded\n×\n3\.5 MiB of 3\.5 MiB · 100%\nLoRA \d+$/,
    );

    const anime = card("anime_style.safetensors");
    await anime.waitFor();
    const shown = await text(anime);
    for (const fact of ["3.5 MiB", "SDXL", "anime style", "vibrant colors", "1girl", "Never used", "#style", "#anime"])
      expect(shown).toContain(fact);
    await page.getByTestId("quota-usage").filter({ hasText: "3.5 MiB of 10.0 GiB" }).waitFor();

    await choose([file("portrait_detail.safetensors", 1.5 * MiB)], "portrait");
    await waitPhase("portrait_detail.safetensors", "done");
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);
  });

  test("search, tag filter and sort", async () => {
    const search = page.getByLabel("Search LoRAs");
    await search.fill("PORTRAIT");
    await waitGrid(["portrait_detail.safetensors"]);
    await page.getByText("Showing 1–1 of 1").waitFor();
    await search.fill("nothing-like-this");
    await page.getByText("No LoRA matches your search.").waitFor();
    await waitGrid([]);
    // Tags and trigger words are searched too: "cel-shaded" is one of anime_style's tags only,
    // "vibrant colors" a trigger word of both.
    await search.fill("CEL-SHAD");
    await waitGrid(["anime_style.safetensors"]);
    await search.fill("vibrant");
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);
    await search.fill("");
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);
    // Two LoRAs fit one page: no pager.
    expect(await page.getByRole("navigation", { name: "Pages" }).isHidden()).toBe(true);

    await page.getByLabel("Filter by tag").fill("style");
    await page.getByLabel("Filter by tag").press("Enter");
    await waitGrid(["anime_style.safetensors"]);
    await page.getByRole("button", { name: "Remove tag filter style" }).click();
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);

    await page.getByLabel("Sort").selectOption({ label: "Name A–Z" });
    await waitGrid(["anime_style.safetensors", "portrait_detail.safetensors"]);
    await page.getByLabel("Sort").selectOption({ label: "Smallest first" });
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);
    await page.getByLabel("Sort").selectOption({ label: "Newest first" });
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);

    // One card per page: the pages follow the registry's page tokens.
    await page.goto(`${studio.url}?pageSize=1`);
    await waitGrid(["portrait_detail.safetensors"]);
    await page.getByText("Showing 1–1 of 2").waitFor();
    const previous = page.getByRole("button", { name: "← Previous" });
    const next = page.getByRole("button", { name: "Next →" });
    expect(await page.getByRole("navigation", { name: "Pages" }).isVisible()).toBe(true);
    expect(await previous.isDisabled()).toBe(true);
    await next.click();
    await waitGrid(["anime_style.safetensors"]);
    await page.getByText("Showing 2–2 of 2").waitFor();
    expect(await next.isDisabled()).toBe(true);
    await previous.click();
    await waitGrid(["portrait_detail.safetensors"]);
    await page.goto(studio.url);
    await waitGrid(["portrait_detail.safetensors", "anime_style.safetensors"]);
  });

  test("details show the extracted metadata and the workflows that used the LoRA", async () => {
    const lora = createClient(LoraService, client(t.userToken));
    const id = (await lora.listLoras({ search: "anime_style" })).loras[0]!.id;
    // A job on the machine uses it; the machine reports the use to the registry.
    const machine = createClient(
      MachineCacheService,
      createConnectTransport({
        baseUrl: t.stack.machineCache.url,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(t.machineToken)],
      }),
    );
    const ensured = await machine.ensureLoras({
      jobId: "job-1",
      userId: t.userId,
      workflowId: "wf-anime",
      workflowName: "Anime Portrait Generator",
      refs: [{ source: LoraSource.USER, identifier: id }],
    });
    expect(ensured.results[0]?.error).toBeUndefined();
    await eventually(async () =>
      expect((await lora.getLora({ loraId: id })).lora?.workflowsUsing.length).toBeGreaterThan(0),
    );

    await page.reload();
    await card("anime_style.safetensors").filter({ hasText: "Used 1 time" }).waitFor();
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "studio-lora-grid.png"), fullPage: true });

    await card("anime_style.safetensors").click();
    const details = page.locator("dialog.details");
    await details.getByRole("heading", { name: "anime_style.safetensors" }).waitFor();
    await details.getByRole("cell", { name: "Anime Portrait Generator" }).waitFor();
    const facts = await text(details.locator("dl.facts"));
    expect(facts).toMatch(/Base model\s+SDXL/);
    expect(facts).toMatch(/Trigger words\s+anime style, vibrant colors, 1girl/);
    expect(facts).toMatch(/Rank\s+16 \(alpha 8\)/);
    expect(facts).toMatch(/Training epochs\s+10/);
    expect(facts).toMatch(/Training images\s+50/);
    expect(facts).toContain(sha["anime_style.safetensors"]);
    expect(facts).toMatch(/Used\s+1 time/);
    expect(await text(details.locator("table.workflows tbody tr"))).toMatch(/^Anime Portrait Generator\s+1\s+/);
    // No preview yet: a placeholder says so.
    await details.getByLabel("No preview image").waitFor();
    await page.screenshot({ path: path.join(ARTIFACTS, "studio-lora-details.png") });

    // Download: the owner's own file, saved under its name, byte for byte.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      details.getByRole("button", { name: "Download" }).click(),
    ]);
    expect(download.suggestedFilename()).toBe("anime_style.safetensors");
    const saved = path.join(dir, "downloaded.safetensors");
    await download.saveAs(saved);
    expect(createHash("sha256").update(readFileSync(saved)).digest("hex")).toBe(sha["anime_style.safetensors"]);
    await details.getByRole("button", { name: "Close" }).click();
    await details.waitFor({ state: "detached" });
  });

  test("a network failure pauses the upload; Resume sends only the blocks that did not arrive", async () => {
    const sent: number[] = [];
    let failing = true;
    await page.route(
      (url) => putBlockIndex(url) >= 0,
      async (route) => {
        const index = putBlockIndex(new URL(route.request().url()));
        if (failing && index >= 2) return route.abort("connectionreset");
        sent.push(index);
        return route.continue();
      },
    );
    try {
      await choose([file("resume_me.safetensors", 4 * MiB)]);
      await waitPhase("resume_me.safetensors", "paused");
      const row = upload("resume_me.safetensors");
      expect(await text(row.getByRole("alert"))).toContain("Upload paused: the connection failed");
      expect(sent.sort()).toEqual([0, 1]);

      failing = false;
      sent.length = 0;
      await row.getByRole("button", { name: "Resume" }).click();
      await waitPhase("resume_me.safetensors", "done");
      expect(await text(row)).toContain("resumed: 2.0 MiB were already uploaded");
      expect(sent.sort()).toEqual([2, 3]);
      await card("resume_me.safetensors").waitFor();
    } finally {
      await page.unrouteAll();
    }
  });

  test("files the server refuses show its reason and message", async () => {
    const notes = path.join(dir, "notes.txt");
    writeFileSync(notes, "not a LoRA");
    const broken = path.join(dir, "broken.safetensors");
    writeFileSync(broken, Buffer.alloc(64 * 1024, 0x41));
    // A torch checkpoint whose pickle would call os.system("ls") when loaded.
    const evil = path.join(dir, "evil.pt");
    writeFileSync(evil, torchZip(callPickle("os", "system", "ls")));
    await choose([notes, broken, evil]);

    await waitPhase("notes.txt", "failed");
    const wrongType = upload("notes.txt").getByRole("alert");
    expect(await wrongType.getAttribute("data-reason")).toBe("INVALID_FILE_FORMAT");
    expect(await text(wrongType)).toMatch(/^Not a valid LoRA file\nFile must be \.safetensors or \.pt format\n/);

    await waitPhase("broken.safetensors", "failed");
    const invalid = upload("broken.safetensors").getByRole("alert");
    expect(await invalid.getAttribute("data-reason")).toBe("INVALID_FILE_FORMAT");
    expect(await text(invalid.locator(".error-message"))).not.toBe("");
    await waitPhase("evil.pt", "failed");
    const unsafe = upload("evil.pt").getByRole("alert");
    expect(await unsafe.getAttribute("data-reason")).toBe("UNSAFE_PICKLE");
    expect(await text(unsafe)).toMatch(/^Unsafe file rejected\n.*os\.system.*\nCode it would run: os\.system\n/);
    expect(await cardNames()).not.toContain("broken.safetensors");
    expect(await cardNames()).not.toContain("evil.pt");
    await shot("studio-refused");

    // Finished rows can be dismissed one by one, or all at once; the grid stays in view.
    await upload("notes.txt").getByRole("button", { name: "Dismiss" }).click();
    await upload("notes.txt").waitFor({ state: "detached" });
    await page.getByRole("button", { name: "Clear finished" }).click();
    expect(await page.locator("li.upload").count()).toBe(0);
    expect(await page.getByRole("button", { name: "Clear finished" }).isHidden()).toBe(true);
  });

  test("a file whose first bytes show it is wrong is refused on the page before any upload", async () => {
    const asked: string[] = [];
    const watch = (request: { url(): string }) => {
      const url = request.url();
      if (url.includes("CreateLoraUpload") || putBlockIndex(new URL(url)) >= 0) asked.push(url);
    };
    page.on("request", watch);
    try {
      const photo = path.join(dir, "photo.safetensors");
      writeFileSync(photo, await testImage("png", 640, 480));
      await choose([photo]);
      await waitPhase("photo.safetensors", "failed");
      const refused = upload("photo.safetensors").getByRole("alert");
      expect(await refused.getAttribute("data-reason")).toBe("INVALID_FILE_FORMAT");
      expect(await text(refused)).toMatch(
        /^Not a valid LoRA file\nThe file is named \.safetensors but its content is a PNG image\.\nDetected: png\nChecked on this computer before uploading: nothing was sent\./,
      );
      expect(asked).toEqual([]);
      await shot("studio-refused-before-upload");
      await upload("photo.safetensors").getByRole("button", { name: "Dismiss" }).click();
    } finally {
      page.off("request", watch);
    }
  });

  test("a file name the registry would refuse is refused on the page, with the rule's message", async () => {
    const device = file("CON.safetensors", 64 * 1024);
    const spoofed = file("evil\u202Egpj.safetensors", 64 * 1024);
    const hidden = file(".hidden.safetensors", 64 * 1024);
    const before = await cardNames();
    await choose([device, spoofed, hidden]);
    await waitPhase("CON.safetensors", "failed");
    const deviceError = upload("CON.safetensors").getByRole("alert");
    expect(await deviceError.getAttribute("data-reason")).toBe("INVALID_NAME");
    expect(await text(deviceError)).toMatch(
      /^Invalid name\n"CON" is a device name on Windows \(CON, PRN, AUX, NUL, COM1-9, LPT1-9\), whatever the extension: rename the file, e\.g\. con_lora\.safetensors\.\nINVALID_NAME$/,
    );
    await waitPhase("evil\u202Egpj.safetensors", "failed");
    expect(await text(upload("evil\u202Egpj.safetensors").getByRole("alert"))).toMatch(
      /text-direction control U\+202E \(RIGHT-TO-LEFT OVERRIDE\) at position 5/,
    );
    await waitPhase(".hidden.safetensors", "failed");
    expect(await text(upload(".hidden.safetensors").getByRole("alert"))).toMatch(/starts with a dot/);
    expect(await cardNames()).toEqual(before);
  });

  test("the quota bar warns from 80%, and an upload that does not fit shows the numbers", async () => {
    const admin = createClient(LoraAdminService, client(t.adminToken));
    const { quota } = await createClient(LoraService, client(t.userToken)).getQuota({});
    await admin.setUserQuota({ userId: t.userId, maxBytes: quota!.usedBytes + BigInt(MiB) });
    try {
      await page.reload();
      const bar = page.getByTestId("quota");
      await bar.getByRole("alert").waitFor();
      expect(await bar.getAttribute("class")).toContain("warning");
      expect(await text(bar.getByRole("alert"))).toMatch(
        /^You have used (8|9)\d% of your LoRA quota \(warning at 80%\)/,
      );

      await choose([file("too_big.safetensors", 2 * MiB)]);
      await waitPhase("too_big.safetensors", "failed");
      const error = upload("too_big.safetensors").getByRole("alert");
      expect(await error.getAttribute("data-reason")).toBe("QUOTA_EXCEEDED");
      const shown = await text(error);
      // The numbers once: used, limit, available and what the file needs.
      expect(shown).toMatch(
        /^Not enough LoRA storage\n[\d.]+ MiB of [\d.]+ MiB used \((8|9)\d%\), 1\.0 MiB available; this file needs 2\.0 MiB\.\nDelete LoRAs you no longer use/,
      );
      expect(shown.match(/available/g)).toHaveLength(1);
      expect(shown).not.toContain("quota exceeded");
    } finally {
      await admin.setUserQuota({ userId: t.userId, resetToDefaults: true });
    }
  });

  test("delete asks first, then removes the LoRA and gives the space back", async () => {
    await page.reload();
    await card("anime_style.safetensors").click();
    const details = page.locator("dialog.details");
    await details.getByRole("button", { name: "Delete LoRA" }).click();
    const confirm = page.locator("dialog.confirm");
    expect(await text(confirm.getByRole("heading"))).toBe("Delete anime_style.safetensors?");
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });
    await details.getByRole("button", { name: "Delete LoRA" }).click();
    await page.locator("dialog.confirm").getByRole("button", { name: "Delete" }).click();
    await page.getByText("Deleted anime_style.safetensors").waitFor();
    await waitGrid(["resume_me.safetensors", "portrait_detail.safetensors"]);
    await page.getByText("2 of 100 LoRAs").waitFor();
  });
  test("edit: shown at once, kept when the server accepts it, rolled back with the server's reason when it refuses", async () => {
    await card("portrait_detail.safetensors").click();
    const details = page.locator("dialog.details");
    await details.getByRole("button", { name: "Edit" }).click();
    const form = details.getByRole("form", { name: "Edit LoRA" });
    await form.getByLabel("Name").fill("portrait_detail_v2.safetensors");
    await form.getByLabel("Tags").fill("portrait, faces");
    await form.getByLabel("Trigger words").fill("detailed face, soft light");
    await form.getByLabel("Description").fill("Sharper eyes and skin.");
    await shot("studio-edit", false);
    await form.getByRole("button", { name: "Save" }).click();
    await details.getByRole("heading", { name: "portrait_detail_v2.safetensors" }).waitFor();
    await card("portrait_detail_v2.safetensors").waitFor();
    const edited = await text(card("portrait_detail_v2.safetensors"));
    for (const fact of ["detailed face", "soft light", "#portrait", "#faces"]) expect(edited).toContain(fact);
    expect(await text(details.locator("dl.facts"))).toMatch(/Description\s+Sharper eyes and skin\./);

    // A refused edit: the page shows it while the server thinks (held here), then puts the LoRA back.
    let answer = () => {};
    const held = new Promise<void>((resolve) => (answer = resolve));
    await page.route("**/emprops.lora.v1.LoraService/UpdateLora", async (route) => {
      await held;
      await route.continue();
    });
    try {
      await details.getByRole("button", { name: "Edit" }).click();
      await form.getByLabel("Name").fill("portrait_detail_v2.pt");
      await form.getByRole("button", { name: "Save" }).click();
      await card("portrait_detail_v2.pt").waitFor();
      answer();
      await card("portrait_detail_v2.safetensors").waitFor();
      const refusal = details.getByRole("alert");
      expect(await refusal.getAttribute("data-reason")).toBe("INVALID_NAME");
      expect(await text(refusal)).toMatch(/^Invalid name\nthe extension cannot change: the file is \.safetensors/);
      await details.getByRole("heading", { name: "portrait_detail_v2.safetensors" }).waitFor();
    } finally {
      await page.unrouteAll();
    }
    // Back to its name, for what follows.
    await details.getByRole("button", { name: "Edit" }).click();
    await form.getByLabel("Name").fill("portrait_detail.safetensors");
    await form.getByRole("button", { name: "Save" }).click();
    await card("portrait_detail.safetensors").waitFor();
    await details.getByRole("button", { name: "Close" }).click();
  });

  test("previews: the file's own thumbnail in the grid, one the owner sets, a placeholder otherwise", async () => {
    const thumbnail = await testImage("png", 320, 240);
    const thumbed = path.join(dir, "with_a_thumbnail_and_a_rather_long_name_that_does_not_fit.safetensors");
    writeFileSync(
      thumbed,
      buildSafetensors(loraTensors(), {
        ...kohyaMetadata("thumbed"),
        "modelspec.thumbnail": `data:image/png;base64,${thumbnail.toString("base64")}`,
      }),
    );
    await choose([thumbed], "thumbed");
    const long = "with_a_thumbnail_and_a_rather_long_name_that_does_not_fit.safetensors";
    await waitPhase(long, "done");
    const longCard = card(long);
    await longCard.locator("img.preview-image").waitFor();
    await page.waitForFunction(
      `[...document.querySelectorAll("article.card img.preview-image")].some((i) => i.complete && i.naturalWidth > 0)`,
    );
    // The long name is shortened in its stem; the extension stays in view.
    const ext = longCard.locator(".name-ext");
    expect(await ext.textContent()).toBe(".safetensors");
    const [cardBox, extBox] = await Promise.all([longCard.boundingBox(), ext.boundingBox()]);
    expect(extBox!.x + extBox!.width).toBeLessThanOrEqual(cardBox!.x + cardBox!.width);
    // Cards without one show the placeholder, at the same size.
    await card("resume_me.safetensors").getByLabel("No preview image").waitFor();

    // The owner sets one from the details; a file that is not an image is refused with the server's reason.
    await card("resume_me.safetensors").click();
    const details = page.locator("dialog.details");
    const gif = path.join(dir, "not-really.png");
    writeFileSync(gif, Buffer.from("GIF89a\x01\x00\x01\x00\x00\x00\x00;", "latin1"));
    await details.getByTestId("preview-input").setInputFiles(gif);
    const refused = details.getByRole("alert");
    await refused.waitFor();
    expect(await refused.getAttribute("data-reason")).toBe("INVALID_IMAGE");
    const jpeg = path.join(dir, "cover.jpg");
    writeFileSync(jpeg, await testImage("jpeg", 1600, 1200));
    await details.getByTestId("preview-input").setInputFiles(jpeg);
    await details.getByRole("button", { name: "Remove image" }).waitFor();
    await page.waitForFunction(
      `(() => { const i = document.querySelector("dialog.details img.preview-image"); return i && i.complete && i.naturalWidth === 1024; })()`,
    );
    await details.getByRole("button", { name: "Close" }).click();
    await page.waitForFunction(
      `[...document.querySelectorAll('article.card[aria-label="resume_me.safetensors"] img')].some((i) => i.complete && i.naturalWidth > 0)`,
    );
    await shot("studio-preview");
  });

  test("over the warning, the quota box names the LoRAs unused longest and deletes one in a click (after asking)", async () => {
    const admin = createClient(LoraAdminService, client(t.adminToken));
    const { quota } = await createClient(LoraService, client(t.userToken)).getQuota({});
    await admin.setUserQuota({ userId: t.userId, maxBytes: quota!.usedBytes + BigInt(MiB / 2) });
    try {
      await page.reload();
      const box = page.getByTestId("quota");
      const suggestions = box.getByRole("list", { name: "Unused LoRAs to delete" });
      await suggestions.waitFor();
      const items = suggestions.getByRole("listitem");
      expect(await items.count()).toBeGreaterThan(0);
      const first = await text(items.first());
      expect(first).toMatch(/never used/);
      expect(await text(box.getByRole("alert"))).toMatch(
        /^You have used (8|9)\d% of your LoRA quota \(warning at 80%\)\. Deleting (the LoRA|these \d LoRAs) unused longest frees [\d.]+ (KiB|MiB):/,
      );
      await shot("studio-suggestions");
      // The README's picture (copied to docs/images/ by hand): previews, the quota warning with its suggestions.
      await shot("studio-lora-library");

      const name = (await items.first().getAttribute("data-lora-id"))!;
      const label = (await items.first().getByRole("button").getAttribute("aria-label"))!.replace(/^Delete /, "");
      await items
        .first()
        .getByRole("button", { name: /^Delete / })
        .click();
      const confirm = page.locator("dialog.confirm");
      expect(await text(confirm.getByRole("heading"))).toBe(`Delete ${label}?`);
      await confirm.getByRole("button", { name: "Delete" }).click();
      await page.getByText(`Deleted ${label}`).waitFor();
      await page.locator(`article.card[data-lora-id="${name}"]`).waitFor({ state: "detached" });
    } finally {
      await admin.setUserQuota({ userId: t.userId, resetToDefaults: true });
    }
  });

  test("the LoRA picker embedded in a plain page: search, filters, preview, a base-model warning, and add", async () => {
    page.setDefaultTimeout(10_000);
    await page.goto(`${studio.url}host.html`);
    await page.evaluate(
      `(async () => { await customElements.whenDefined("emprops-lora-picker");
        const p = document.getElementById("picker"); p.token = ${JSON.stringify(t.userToken)};
        p.setAttribute("registry-url", ${JSON.stringify(registryUrl)}); })()`,
    );
    const picker = page.locator("emprops-lora-picker");
    const results = picker.getByRole("listbox", { name: "LoRAs" });
    const options = results.getByRole("option");
    await options.first().waitFor();
    // Search reaches trigger words; filters by tag and base model go to the registry.
    await picker.getByLabel("Search LoRAs").fill("vibrant");
    await picker
      .getByRole("option", { name: "with_a_thumbnail_and_a_rather_long_name_that_does_not_fit.safetensors" })
      .waitFor();
    await picker.getByLabel("Tag").fill("nothing-tagged-so");
    await picker.getByText("No LoRA matches.").waitFor();
    await picker.getByLabel("Tag").fill("thumbed");
    const thumbed = results.getByRole("option", { name: /^with_a_thumbnail/ });
    await thumbed.waitFor();
    await picker.getByLabel("Base model").selectOption({ label: "SD1.5 (this workflow)" });
    await picker.getByText("No LoRA matches.").waitFor();
    await picker.getByLabel("Base model").selectOption({ label: "SDXL" });
    await thumbed.click();
    const selected = picker.getByRole("region", { name: "Selected LoRA" });
    await selected.getByRole("img", { name: /^Preview of with_a_thumbnail/ }).waitFor();
    expect(await text(selected)).toContain("SDXL");
    expect(await text(selected.getByLabel("Trigger words"))).toContain("anime style");
    expect(await text(selected.getByRole("alert"))).toBe(
      "This LoRA was trained for SDXL; this workflow uses sd_v1-5-pruned.safetensors. It may not work, or change the image in unexpected ways.",
    );
    await shot("studio-picker", false);
    await selected.getByRole("button", { name: "Add to workflow" }).click();
    const id = (await thumbed.getAttribute("data-lora-id"))!;
    const added = await page.evaluate<unknown[]>("window.added");
    expect(added).toEqual([
      {
        reference: { lora_source: "user", lora_identifier: id },
        triggerWords: ["anime style", "vibrant colors", "1girl"],
        name: "with_a_thumbnail_and_a_rather_long_name_that_does_not_fit.safetensors",
        baseModel: "SDXL",
        incompatible: true,
      },
    ]);
    // The same workflow on an SDXL checkpoint: no warning.
    await page.evaluate(`document.getElementById("picker").setAttribute("base-model", "SDXL")`);
    await selected.getByRole("button", { name: "Add to workflow" }).waitFor();
    expect(await selected.getByRole("alert").count()).toBe(0);

    // The demo page `npm start` serves shows the same element with the signed-in tab's session.
    await page.goto(`${studio.url}picker-demo.html#token=${t.userToken}`);
    await page
      .locator("emprops-lora-picker")
      .getByRole("listbox", { name: "LoRAs" })
      .getByRole("option")
      .first()
      .waitFor();
  });
});
