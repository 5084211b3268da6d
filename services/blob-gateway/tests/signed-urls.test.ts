import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { mintToken } from "@emprops/platform";
import { ValidationStatus } from "@emprops/contracts";
import {
  buildSafetensors,
  callPickle,
  loraStorages,
  LORA_TENSORS,
  loraTensors,
  rpcFailure,
  stateDictPickle,
  torchZip,
} from "@emprops/testkit";
import { finalBlobOf, newBlob, newUpload, pathOf, stagedPathOf } from "./support/ids.js";
import { type GatewayUnderTest, JWT_SECRET, startGatewayForTest } from "./support/start-gateway.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("signed-urls", {
    UPLOAD_BLOCK_SIZE_BYTES: String(MiB),
    MAX_LORA_BYTES: String(200 * GiB),
    DOWNLOAD_URL_MAX_TTL_SECONDS: "1200",
  });
});

afterAll(async () => {
  await t?.stop();
});

/** Every blob in the user container, committed or only staged. */
async function userContainerListing(): Promise<string[]> {
  const names: string[] = [];
  for await (const b of t.userContainer.listBlobsFlat({ includeUncommitedBlobs: true })) names.push(b.name);
  return names.sort();
}

const blockId = (i: number) => Buffer.from(`block-${String(i).padStart(6, "0")}`).toString("base64");

function putBlock(uploadUrl: string, id: string, body: Uint8Array, signal?: AbortSignal) {
  return fetch(`${uploadUrl}&comp=block&blockid=${encodeURIComponent(id)}`, { method: "PUT", body, signal });
}

function putBlockList(uploadUrl: string, ids: string[]) {
  const xml = `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`;
  return fetch(`${uploadUrl}&comp=blocklist`, { method: "PUT", body: xml });
}

describe("browser-style upload with the signed URL", () => {
  it("resumes from the uncommitted block list after an interruption, then verifies", async () => {
    // About 3.2 MiB: four 1 MiB blocks at the recommended size.
    const file = buildSafetensors(loraTensors(24, 32, 1024), { ss_network_dim: "32" });
    const upload = newUpload();
    const { uploadUrl, blockSizeBytes, blobPath, expireTime } = await t.client.createUploadUrl({
      upload,
      sizeBytes: BigInt(file.length),
    });
    expect(blobPath).toBe(stagedPathOf(upload));
    expect(Number(blockSizeBytes)).toBe(MiB);
    expect(timestampDate(expireTime!).getTime()).toBeGreaterThan(Date.now() + 5 * 3600_000);

    const size = Number(blockSizeBytes);
    const blocks: Buffer[] = [];
    for (let at = 0; at < file.length; at += size) blocks.push(file.subarray(at, at + size));
    expect(blocks.length).toBe(4);

    // The browser sends two blocks, then the tab dies while sending the third.
    for (const i of [0, 1]) expect((await putBlock(uploadUrl, blockId(i), blocks[i]!)).status).toBe(201);
    const abort = new AbortController();
    const interrupted = putBlock(uploadUrl, blockId(2), blocks[2]!, abort.signal);
    abort.abort();
    await expect(interrupted).rejects.toThrow();

    // The URL cannot read the block list; the gateway reports it.
    const state = await t.client.getUploadState({ upload });
    expect(state.committed).toBe(false);
    const staged = new Map(state.uncommittedBlocks.map((b) => [b.blockId, Number(b.sizeBytes)]));
    expect(staged.get(blockId(0))).toBe(size);
    expect(staged.get(blockId(1))).toBe(size);
    expect(staged.has(blockId(3))).toBe(false);

    // Resume: send every block not staged with its full size, then commit the list.
    for (let i = 0; i < blocks.length; i++) {
      if (staged.get(blockId(i)) === blocks[i]!.length) continue;
      expect((await putBlock(uploadUrl, blockId(i), blocks[i]!)).status).toBe(201);
    }
    expect(
      (
        await putBlockList(
          uploadUrl,
          blocks.map((_, i) => blockId(i)),
        )
      ).status,
    ).toBe(201);

    const after = await t.client.getUploadState({ upload });
    expect(after.committed).toBe(true);
    expect(Number(after.committedSizeBytes)).toBe(file.length);
    expect(after.uncommittedBlocks).toEqual([]);

    const destination = finalBlobOf(upload);
    const { verification, stored } = await t.client.commitUpload({ upload, destination });
    expect(stored?.blobPath).toBe(pathOf(destination));
    expect(verification?.status).toBe(ValidationStatus.SAFE);
    expect(verification?.sha256).toBe(createHash("sha256").update(file).digest("hex"));
    expect(Number(verification?.sizeBytes)).toBe(file.length);
  });

  it("cannot write another path (above all no final path), cannot read, list or delete", async () => {
    const upload = newUpload("pt");
    const { uploadUrl } = await t.client.createUploadUrl({ upload, sizeBytes: 10n });
    const url = new URL(uploadUrl);
    const sas = url.search;

    // Another upload of the same user, the LoRA's final path, the container itself.
    const other = { ...upload, uploadId: newUpload().uploadId };
    const final = finalBlobOf(upload);
    for (const path of [stagedPathOf(other), pathOf(final)]) {
      const otherUrl = `${t.userContainer.getBlockBlobClient(path).url}${sas}`;
      expect((await putBlock(otherUrl, blockId(0), Buffer.from("x"))).status).toBe(403);
      const otherBlobPut = await fetch(otherUrl, {
        method: "PUT",
        headers: { "x-ms-blob-type": "BlockBlob" },
        body: "x",
      });
      expect(otherBlobPut.status).toBe(403);
    }
    const sharedUrl = `${t.sharedContainer.getBlockBlobClient("models/loras/evil.safetensors").url}${sas}`;
    expect(
      (await fetch(sharedUrl, { method: "PUT", headers: { "x-ms-blob-type": "BlockBlob" }, body: "x" })).status,
    ).toBe(403);

    // Its own blob: write works, read / delete do not.
    expect((await putBlock(uploadUrl, blockId(0), Buffer.from("0123456789"))).status).toBe(201);
    expect((await putBlockList(uploadUrl, [blockId(0)])).status).toBe(201);
    expect((await fetch(uploadUrl)).status).toBe(403);
    expect((await fetch(`${uploadUrl}&comp=blocklist&blocklisttype=all`)).status).toBe(403);
    expect((await fetch(uploadUrl, { method: "DELETE" })).status).toBe(403);
    const listUrl = `${t.userContainer.url}${sas}&restype=container&comp=list`;
    expect((await fetch(listUrl)).status).toBe(403);

    expect(await userContainerListing()).toEqual(expect.arrayContaining([stagedPathOf(upload)]));
    expect(await userContainerListing()).not.toContain(stagedPathOf(other));
    expect(await userContainerListing()).not.toContain(pathOf(final));
  });

  it("stops working after its expiry", async () => {
    const upload = newUpload();
    const { uploadUrl, expireTime } = await t.client.createUploadUrl({ upload, sizeBytes: 100n, ttlSeconds: 2 });
    const expiresAt = timestampDate(expireTime!).getTime();
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 2000);
    expect((await putBlock(uploadUrl, blockId(0), Buffer.from("before"))).status).toBe(201);

    await sleep(Math.max(0, expiresAt - Date.now()) + 1500);
    expect((await putBlock(uploadUrl, blockId(1), Buffer.from("after"))).status).toBe(403);
    expect((await putBlockList(uploadUrl, [blockId(0)])).status).toBe(403);
    const state = await t.client.getUploadState({ upload });
    expect(state.uncommittedBlocks.map((b) => b.blockId)).toEqual([blockId(0)]);
  });

  it("recommends bigger blocks for files that would need more than 50,000", async () => {
    const small = await t.client.createUploadUrl({ upload: newUpload(), sizeBytes: BigInt(GiB) });
    expect(Number(small.blockSizeBytes)).toBe(MiB);
    const big = await t.client.createUploadUrl({ upload: newUpload(), sizeBytes: BigInt(100 * GiB) });
    // 100 GiB / 50,000 = 2.05 MiB, rounded up to whole MiB.
    expect(Number(big.blockSizeBytes)).toBe(3 * MiB);
    expect((100 * GiB) / Number(big.blockSizeBytes)).toBeLessThanOrEqual(50_000);
  });
});

describe("CreateUploadUrl and GetUploadState refuse bad input", () => {
  const userId = "4f1e2d3c-0000-4000-8000-00000000abcd";
  const cases: [string, () => Promise<unknown>, string, string][] = [
    ["no upload", () => t.client.createUploadUrl({ sizeBytes: 10n }), "InvalidArgument", "INVALID_REQUEST"],
    [
      "user id not a UUID",
      () =>
        t.client.createUploadUrl({
          upload: { userId: "../../etc", uploadId: newUpload().uploadId, extension: "pt" },
          sizeBytes: 1n,
        }),
      "InvalidArgument",
      "INVALID_ID",
    ],
    ...["0", "1", "../1", "1/2", " 4f1e2d3c-0000-4000-8000-00000000abcd", "users", ""].map(
      (uploadId) =>
        [
          `upload id ${JSON.stringify(uploadId)}`,
          () => t.client.createUploadUrl({ upload: { userId, uploadId, extension: "safetensors" }, sizeBytes: 1n }),
          "InvalidArgument",
          "INVALID_ID",
        ] as [string, () => Promise<unknown>, string, string],
    ),
    ...["exe", "SAFETENSORS", ".pt", "", "safetensors/../x", "ckpt"].map(
      (extension) =>
        [
          `extension ${JSON.stringify(extension)}`,
          () =>
            t.client.createUploadUrl({
              upload: { userId, uploadId: newUpload().uploadId, extension },
              sizeBytes: 1n,
            }),
          "InvalidArgument",
          "INVALID_FILE_FORMAT",
        ] as [string, () => Promise<unknown>, string, string],
    ),
    [
      "size 0",
      () => t.client.createUploadUrl({ upload: newUpload(), sizeBytes: 0n }),
      "InvalidArgument",
      "INVALID_SIZE",
    ],
    [
      "size -5",
      () => t.client.createUploadUrl({ upload: newUpload(), sizeBytes: -5n }),
      "InvalidArgument",
      "INVALID_SIZE",
    ],
    [
      "size above the limit",
      () => t.client.createUploadUrl({ upload: newUpload(), sizeBytes: BigInt(200 * GiB + 1) }),
      "InvalidArgument",
      "FILE_TOO_LARGE",
    ],
    [
      "negative ttl",
      () => t.client.createUploadUrl({ upload: newUpload(), sizeBytes: 1n, ttlSeconds: -1 }),
      "InvalidArgument",
      "INVALID_REQUEST",
    ],
    [
      "ttl above the maximum",
      () => t.client.createUploadUrl({ upload: newUpload(), sizeBytes: 1n, ttlSeconds: 24 * 3600 + 1 }),
      "InvalidArgument",
      "INVALID_REQUEST",
    ],
    [
      "upload state with a bad id",
      () => t.client.getUploadState({ upload: { userId, uploadId: "abc", extension: "pt" } }),
      "InvalidArgument",
      "INVALID_ID",
    ],
  ];

  it.each(cases)("%s", async (_name, call, code, reason) => {
    const before = await userContainerListing();
    const failure = await rpcFailure(call());
    expect({ code: failure.code, reason: failure.reason }).toEqual({ code, reason });
    expect(failure.message.length).toBeGreaterThan(0);
    expect(await userContainerListing()).toEqual(before);
  });

  it("reports an empty state for a blob nobody wrote to", async () => {
    const state = await t.client.getUploadState({ upload: newUpload() });
    expect(state.committed).toBe(false);
    expect(Number(state.committedSizeBytes)).toBe(0);
    expect(state.uncommittedBlocks).toEqual([]);
  });

  it("normalises the user id's case, so one user has one folder", async () => {
    const upload = newUpload();
    const res = await t.client.createUploadUrl({
      upload: { ...upload, userId: upload.userId.toUpperCase(), uploadId: upload.uploadId.toUpperCase() },
      sizeBytes: 1n,
    });
    expect(res.blobPath).toBe(stagedPathOf(upload));
  });
});

describe("CreateUploadUrl with the file's first bytes", () => {
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(2000)]);

  it("refuses a head the verifier refuses, with its reason and message, and signs nothing", async () => {
    const before = await userContainerListing();
    const cases: [string, Buffer, "safetensors" | "pt", bigint, string | RegExp][] = [
      [
        "an image named .safetensors",
        png,
        "safetensors",
        10n * BigInt(MiB),
        "The file is named .safetensors but its content is a PNG image.",
      ],
      [
        "a safetensors header longer than the file",
        buildSafetensors(loraTensors(1)).subarray(0, 16),
        "safetensors",
        100n,
        /header is truncated/,
      ],
      [
        "a safetensors file named .pt",
        buildSafetensors(loraTensors(1)),
        "pt",
        BigInt(buildSafetensors(loraTensors(1)).length),
        /named \.pt but its content is a safetensors file/,
      ],
      [
        "a raw pickle named .pt",
        Buffer.concat([stateDictPickle(LORA_TENSORS), Buffer.alloc(1024)]),
        "pt",
        5n * BigInt(MiB),
        /raw pickle/,
      ],
    ];
    for (const [what, head, extension, sizeBytes, message] of cases) {
      const upload = { ...newUpload(), extension };
      const failure = await rpcFailure(t.client.createUploadUrl({ upload, sizeBytes, head }));
      expect([what, failure.code, failure.reason, failure.metadata.field]).toEqual([
        what,
        "InvalidArgument",
        "INVALID_FILE_FORMAT",
        "head",
      ]);
      expect(failure.message).toMatch(message);
    }
    // A checkpoint whose data.pkl, within the head, would call os.system: the verifier's UNSAFE_PICKLE.
    const exploit = torchZip(callPickle("os", "system", "id"));
    const unsafe = await rpcFailure(
      t.client.createUploadUrl({ upload: newUpload("pt"), sizeBytes: BigInt(5 * MiB), head: exploit }),
    );
    expect(unsafe).toMatchObject({
      code: "InvalidArgument",
      reason: "UNSAFE_PICKLE",
      message: expect.stringMatching(/os\.system/),
    });
    expect(await userContainerListing()).toEqual(before);
  });

  it("signs a URL for a head that passes or decides nothing, and refuses a head longer than allowed", async () => {
    const file = buildSafetensors(loraTensors(24, 32, 1024));
    const passed = await t.client.createUploadUrl({
      upload: newUpload(),
      sizeBytes: BigInt(file.length),
      head: file.subarray(0, MiB),
    });
    expect(passed.uploadUrl).not.toBe("");
    const zip = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    const pt = await t.client.createUploadUrl({ upload: newUpload("pt"), sizeBytes: BigInt(zip.length), head: zip });
    expect(pt.uploadUrl).not.toBe("");
    for (const [head, sizeBytes] of [
      [Buffer.alloc(MiB + 1), BigInt(GiB)],
      [Buffer.alloc(11), 10n],
    ] as const) {
      const failure = await rpcFailure(t.client.createUploadUrl({ upload: newUpload(), sizeBytes, head }));
      expect([failure.code, failure.reason, failure.metadata.field]).toEqual([
        "InvalidArgument",
        "INVALID_REQUEST",
        "head",
      ]);
    }
  });
});

describe("CreateDownloadUrls", () => {
  it("signs read-only URLs for user and shared LoRAs, in request order, with sizes", async () => {
    const blob = newBlob();
    const userBytes = Buffer.from("user lora bytes");
    await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(userBytes);
    const sharedName = "style one (v2) #1 & 50%.safetensors";
    const sharedBytes = buildSafetensors(loraTensors(1));
    await t.sharedContainer.getBlockBlobClient(`models/loras/${sharedName}`).uploadData(sharedBytes);
    const missing = newBlob("pt");

    const res = await t.client.createDownloadUrls({
      targets: [
        { target: { case: "sharedLora", value: { name: sharedName } } },
        { target: { case: "userLora", value: blob } },
        { target: { case: "userLora", value: missing } },
      ],
      includeProperties: true,
    });
    expect(res.urls.map((u) => u.blobPath)).toEqual([`models/loras/${sharedName}`, pathOf(blob), pathOf(missing)]);
    expect(res.urls.map((u) => Number(u.sizeBytes))).toEqual([sharedBytes.length, userBytes.length, -1]);
    for (const u of res.urls) {
      const ttl = timestampDate(u.expireTime!).getTime() - Date.now();
      expect(ttl).toBeGreaterThan(10 * 60_000);
      expect(ttl).toBeLessThanOrEqual(15 * 60_000);
    }

    const [shared, user, absent] = res.urls;
    expect(Buffer.from(await (await fetch(shared!.url)).arrayBuffer())).toEqual(sharedBytes);
    expect(Buffer.from(await (await fetch(user!.url)).arrayBuffer())).toEqual(userBytes);
    expect((await fetch(absent!.url)).status).toBe(404);

    // Read-only: no overwrite, no delete, no other blob.
    const overwrite = await fetch(user!.url, { method: "PUT", headers: { "x-ms-blob-type": "BlockBlob" }, body: "x" });
    expect(overwrite.status).toBe(403);
    expect((await fetch(user!.url, { method: "DELETE" })).status).toBe(403);
    const sibling = `${t.userContainer.getBlockBlobClient(pathOf(missing)).url}${new URL(user!.url).search}`;
    expect((await fetch(sibling)).status).toBe(403);
    expect(Buffer.from(await (await fetch(user!.url)).arrayBuffer())).toEqual(userBytes);
  });

  it("honours a requested lifetime and answers an empty list with an empty list", async () => {
    const res = await t.client.createDownloadUrls({
      targets: [{ target: { case: "userLora", value: newBlob() } }],
      ttlSeconds: 60,
    });
    const ttl = timestampDate(res.urls[0]!.expireTime!).getTime() - Date.now();
    expect(ttl).toBeLessThanOrEqual(60_000);
    expect(ttl).toBeGreaterThan(50_000);
    expect(Number(res.urls[0]!.sizeBytes)).toBe(0);
    expect((await t.client.createDownloadUrls({ targets: [] })).urls).toEqual([]);
  });

  it("answers a missing shared LoRA with size -1 and no URL", async () => {
    const res = await t.client.createDownloadUrls({
      targets: [{ target: { case: "sharedLora", value: { name: "nobody-put-this.safetensors" } } }],
    });
    expect(res.urls[0]).toMatchObject({ sizeBytes: -1n, url: "", verificationPending: false });
    expect(res.urls[0]?.verification).toBeUndefined();
  });

  const shared = (name: string) => ({ target: { case: "sharedLora" as const, value: { name } } });
  const badNames = [
    "../secret.safetensors",
    "a/b.safetensors",
    "a\\b.safetensors",
    "..",
    "",
    "x\u0000.pt",
    "x\n.pt",
    "x.",
    " x.pt",
    "a".repeat(256),
    "evil\u202Egpj.safetensors",
    "zero\u200Bwidth.safetensors",
    "\uFEFFbom.safetensors",
    "CON.safetensors",
    "nul.pt",
    "com1.ckpt",
    "lpt\u00B9.safetensors",
    ".hidden.safetensors",
    "a:stream.safetensors",
    `${"日".repeat(67)}.safetensors`,
    "readme.txt",
  ];

  it.each(badNames)("refuses the shared name %j with INVALID_NAME", async (name) => {
    const failure = await rpcFailure(
      t.client.createDownloadUrls({ targets: [shared("ok.safetensors"), shared(name)] }),
    );
    expect([failure.code, failure.reason]).toEqual(["InvalidArgument", "INVALID_NAME"]);
    expect(failure.metadata.field).toBe("targets[1].shared_lora.name");
    expect(failure.message).toMatch(/^shared LoRA name: (The file name |File must be |"[^"]+" is a device name)/);
  });

  it.each(["style.ckpt", "日本語 style.safetensors", "console.pt", "x..y.sft"])(
    "signs the shared name %j (any model extension, the same rule as uploads)",
    async (name) => {
      const safetensors = /\.(safetensors|sft)$/.test(name);
      const content = safetensors
        ? buildSafetensors(loraTensors(1))
        : torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
      await t.sharedContainer.getBlockBlobClient(`models/loras/${name}`).uploadData(content);
      const res = await t.client.createDownloadUrls({ targets: [shared(name)] });
      expect(res.urls[0]?.verification?.status).toBe(ValidationStatus.SAFE);
      expect(decodeURIComponent(new URL(res.urls[0]!.url).pathname).endsWith(`/models/loras/${name}`)).toBe(true);
    },
  );

  it.each([
    ["my_style.safetensors", `attachment; filename="my_style.safetensors"`],
    ["Café ☕ style.pt", `attachment; filename="Caf_ _ style.pt"; filename*=UTF-8''Caf%C3%A9%20%E2%98%95%20style.pt`],
    ["my style (v2).safetensors", `attachment; filename="my style (v2).safetensors"`],
  ])("a download URL answers with Content-Disposition naming %j", async (name, header) => {
    const blob = newBlob("pt");
    await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(Buffer.from("the owner's file"));
    const res = await t.client.createDownloadUrls({
      targets: [{ target: { case: "userLora", value: blob }, attachmentFileName: name }],
    });
    const got = await fetch(res.urls[0]!.url);
    expect(got.status).toBe(200);
    expect(got.headers.get("content-disposition")).toBe(header);
    expect(await got.text()).toBe("the owner's file");
  });

  it("refuses an attachment name that breaks the file-name rule", async () => {
    const failure = await rpcFailure(
      t.client.createDownloadUrls({
        targets: [{ target: { case: "userLora", value: newBlob() }, attachmentFileName: "../evil\r\n.safetensors" }],
      }),
    );
    expect([failure.reason, failure.metadata.field]).toEqual(["INVALID_NAME", "targets[0].attachment_file_name"]);
  });

  it("refuses bad targets, too many targets and a too long lifetime", async () => {
    const tooMany = Array.from({ length: 65 }, () => shared("a.safetensors"));
    expect((await rpcFailure(t.client.createDownloadUrls({ targets: tooMany }))).reason).toBe("INVALID_REQUEST");
    expect((await rpcFailure(t.client.createDownloadUrls({ targets: [{}] }))).reason).toBe("INVALID_REQUEST");
    const badUser = { target: { case: "userLora" as const, value: { userId: "x", loraId: "1", extension: "pt" } } };
    const failure = await rpcFailure(t.client.createDownloadUrls({ targets: [badUser] }));
    expect([failure.reason, failure.metadata.field]).toEqual(["INVALID_ID", "targets[0].user_lora.user_id"]);
    const longTtl = await rpcFailure(t.client.createDownloadUrls({ targets: [shared("a.pt")], ttlSeconds: 1201 }));
    expect([longTtl.code, longTtl.reason]).toEqual(["InvalidArgument", "INVALID_REQUEST"]);
  });
});

describe("access", () => {
  it("needs a token with the service or admin role", async () => {
    const call = (token: string | undefined) =>
      t.clientWith(token).createUploadUrl({ upload: newUpload(), sizeBytes: 1n });
    const none = await rpcFailure(call(undefined));
    expect([none.code, none.reason]).toEqual(["Unauthenticated", "TOKEN_MISSING"]);
    const user = await rpcFailure(call(await mintToken(JWT_SECRET, { subject: newBlob().userId })));
    expect([user.code, user.reason]).toEqual(["PermissionDenied", "ROLE_REQUIRED"]);
    const machine = await rpcFailure(call(await mintToken(JWT_SECRET, { subject: "m1", roles: ["machine"] })));
    expect([machine.code, machine.reason]).toEqual(["PermissionDenied", "ROLE_REQUIRED"]);
    const forged = await rpcFailure(
      call(await mintToken("another-secret-0123456789abcdef", { subject: "x", roles: ["service"] })),
    );
    expect([forged.code, forged.reason]).toEqual(["Unauthenticated", "TOKEN_INVALID"]);
    const admin = await call(await mintToken(JWT_SECRET, { subject: "ops", roles: ["admin"] }));
    expect(admin.uploadUrl).toContain("sig=");
  });
});
