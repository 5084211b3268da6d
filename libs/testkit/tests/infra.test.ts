import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import {
  eventually,
  startAzurite,
  startNatsServer,
  startPostgres,
  type StartedAzurite,
  type StartedNatsServer,
  type StartedPostgres,
} from "@emprops/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { childrenOf, isAlive, processesMentioning, watchdogsOf } from "./support/processes.js";
import { sql } from "./support/sql.js";

async function withJetStream<T>(url: string, use: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>) {
  const nc = await connect({ servers: url });
  try {
    return await use(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

/** A scratch directory the postgres user can traverse when tests run as root. */
function scratch(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "testkit-test-"));
  chmodSync(dir, 0o755);
  return dir;
}

describe("starting dependencies explicitly", () => {
  let pg: StartedPostgres;
  let nats: StartedNatsServer;
  let azurite: StartedAzurite;
  let postgresChildren: number[];
  let watchdogsBefore: number[];

  beforeAll(async () => {
    watchdogsBefore = watchdogsOf(process.pid);
    // allSettled: if one fails, afterAll still stops the others.
    const [p, n, a] = await Promise.allSettled([startPostgres(), startNatsServer(), startAzurite()]);
    if (p.status === "fulfilled") pg = p.value;
    if (n.status === "fulfilled") nats = n.value;
    if (a.status === "fulfilled") azurite = a.value;
    for (const result of [p, n, a]) if (result.status === "rejected") throw result.reason;
    postgresChildren = childrenOf(pg.pid);
  });
  afterAll(async () => {
    await Promise.all([pg?.stop(), nats?.stop(), azurite?.stop()]);
  });

  it("starts a working PostgreSQL on a port of its own", async () => {
    expect(pg.url).toMatch(/^postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/postgres$/);
    const [row] = await sql<{ version: string; encoding: string }>(
      pg.url,
      "SELECT version(), pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = 'postgres'",
    );
    expect(row?.version).toMatch(/^PostgreSQL 18/);
    expect(row?.encoding).toBe("UTF8");
    await sql(pg.url, "CREATE DATABASE created_by_test");
    expect(postgresChildren.length).toBeGreaterThan(0);
  });

  it("starts a working JetStream nats-server", async () => {
    expect(nats.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    const info = await withJetStream(nats.url, async (jsm) => {
      await jsm.streams.add({ name: "S", subjects: ["s.>"] });
      await jsm.jetstream().publish("s.one", "hello");
      return jsm.streams.info("S");
    });
    expect(info.state.messages).toBe(1);
  });

  it("starts a working Azurite for the dev account", async () => {
    expect(azurite.blobEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1$/);
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("fresh");
    await container.create();
    await container.uploadBlockBlob("b", "data", 4);
    expect((await container.getBlobClient("b").downloadToBuffer()).toString()).toBe("data");
  });

  it("guards every process against outliving this one", () => {
    expect(watchdogsOf(process.pid)).toHaveLength(watchdogsBefore.length + 3);
  });

  it("stop() waits until no process is left, and removes throw-away data", async () => {
    await Promise.all([pg.stop(), nats.stop(), azurite.stop()]);
    for (const pid of [pg.pid, ...postgresChildren, nats.pid, azurite.pid]) {
      expect({ pid, alive: isAlive(pid) }).toEqual({ pid, alive: false });
    }
    expect(watchdogsOf(process.pid)).toEqual(watchdogsBefore);
    expect(existsSync(pg.dataDir)).toBe(false);
    expect(existsSync(nats.dataDir)).toBe(false);
    await Promise.all([pg.stop(), nats.stop(), azurite.stop()]); // idempotent
  });
});

describe("persistent data directories (the dev stack)", () => {
  let base: string;
  beforeAll(() => {
    base = scratch();
  });
  afterAll(() => {
    rmSync(base, { recursive: true, force: true });
  });

  it("initialises PostgreSQL once and reuses the cluster, on a fixed port", async () => {
    const probe = await startPostgres();
    const port = Number(new URL(probe.url).port);
    await probe.stop(); // frees a port postgres itself could bind
    const options = { dataDir: path.join(base, "postgres"), persistent: true, port };

    const first = await startPostgres(options);
    try {
      expect(new URL(first.url).port).toBe(String(port));
      await sql(first.url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')");
    } finally {
      await first.stop();
    }
    expect(existsSync(path.join(base, "postgres", "PG_VERSION"))).toBe(true);

    const second = await startPostgres(options);
    try {
      expect(await sql(second.url, "SELECT v FROM kept")).toEqual([{ v: "still here" }]);
    } finally {
      await second.stop();
    }
    expect(existsSync(path.join(base, "postgres", "PG_VERSION"))).toBe(true);
  });

  it("keeps JetStream streams across nats-server restarts", async () => {
    const options = { dataDir: path.join(base, "nats"), persistent: true };
    const first = await startNatsServer(options);
    try {
      await withJetStream(first.url, async (jsm) => {
        await jsm.streams.add({ name: "KEPT", subjects: ["kept.>"] });
        await jsm.jetstream().publish("kept.one", "x");
      });
    } finally {
      await first.stop();
    }
    const second = await startNatsServer(options);
    try {
      const info = await withJetStream(second.url, (jsm) => jsm.streams.info("KEPT"));
      expect(info.state.messages).toBe(1);
    } finally {
      await second.stop();
    }
  });

  it("keeps Azurite blobs in --location across restarts", async () => {
    const options = { dataDir: path.join(base, "azurite"), persistent: true };
    const first = await startAzurite(options);
    try {
      const container = BlobServiceClient.fromConnectionString(first.connectionString).getContainerClient("kept");
      await container.create();
      await container.uploadBlockBlob("b", "persisted", 9);
    } finally {
      await first.stop();
    }
    expect(readdirSync(path.join(base, "azurite")).length).toBeGreaterThan(0);
    const second = await startAzurite(options);
    try {
      const blob = BlobServiceClient.fromConnectionString(second.connectionString).getContainerClient("kept");
      expect((await blob.getBlobClient("b").downloadToBuffer()).toString()).toBe("persisted");
    } finally {
      await second.stop();
    }
  });

  it("refuses persistent without a dataDir", async () => {
    await expect(startNatsServer({ persistent: true })).rejects.toThrow("persistent: true needs a dataDir");
  });
});

describe("failures to start", () => {
  it("says how to install nats-server when it is missing", async () => {
    await expect(startNatsServer({ binary: "/nonexistent/nats-server" })).rejects.toThrow(
      /cannot run \/nonexistent\/nats-server: .*ENOENT.*apt-get install -y nats-server/,
    );
  });

  it("times out with the process's output and leaves nothing behind", async () => {
    const dir = scratch();
    try {
      const error = await startNatsServer({ dataDir: dir, startTimeoutMs: 1 }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(error?.message).toMatch(/^nats-server did not come up within 0\.001 s/);
      expect(processesMentioning(dir)).toEqual([]);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("quotes PostgreSQL's own complaint when its port is taken", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(startPostgres({ port })).rejects.toThrow(/postgres exited before it was ready[\s\S]*could not bind/);
    } finally {
      blocker.close();
    }
  });
});

interface FixturePids {
  postgres: number;
  postgresDir: string;
  nats: number;
  azurite: number;
}

/** Runs fixtures/start-and-wait.cjs in plain Node and reads the pids it prints. */
async function runOwner(...args: string[]): Promise<{ owner: ChildProcess; started: FixturePids; pids: number[] }> {
  const owner = spawn(process.execPath, [path.join(__dirname, "fixtures/start-and-wait.cjs"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  owner.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let stdout = "";
    owner.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes("\n")) resolve(stdout.trim());
    });
    owner.once("exit", (code) => reject(new Error(`fixture exited (${code}) before starting: ${stderr}`)));
  });
  const started = JSON.parse(line) as FixturePids;
  return { owner, started, pids: [started.postgres, ...childrenOf(started.postgres), started.nats, started.azurite] };
}

describe("when the owner goes away without stop()", () => {
  // The fixture starts all three servers in a fresh process: allow each its full start timeout.
  jest.setTimeout(150_000);

  it("SIGKILL: its servers are stopped and throw-away data removed by the watchdogs", async () => {
    const { owner, started, pids } = await runOwner();
    expect(pids.every(isAlive)).toBe(true);

    owner.kill("SIGKILL");

    await eventually(() => expect(pids.filter(isAlive)).toEqual([]));
    await eventually(() => expect(existsSync(path.dirname(started.postgresDir))).toBe(false));
  });

  it("running out of work: unstopped servers do not keep it alive, and die with it", async () => {
    const { owner, started, pids } = await runOwner("--exit");
    const code = await new Promise<number | null>((resolve) => {
      if (owner.exitCode !== null) resolve(owner.exitCode);
      else owner.once("exit", resolve);
    });
    expect(code).toBe(0);

    await eventually(() => expect(pids.filter(isAlive)).toEqual([]));
    await eventually(() => expect(existsSync(path.dirname(started.postgresDir))).toBe(false));
  });
});
