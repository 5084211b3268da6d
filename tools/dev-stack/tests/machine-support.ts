import { createHash } from "node:crypto";
import { BlobServiceClient, BlockBlobClient } from "@azure/storage-blob";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { LoraAdminService, LoraResolverService, LoraService, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, mintToken, type Role } from "@emprops/platform";
import type { Fault, FaultProxy, FaultRule, SeenRequest } from "@emprops/testkit";

export const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

export interface UploadedLora {
  id: string;
  userId: string;
  name: string;
  bytes: Buffer;
  sha256: string;
}

/** Uploads through the registry's public flow: CreateLoraUpload, Put Block + Put Block List, CompleteLoraUpload. */
export async function uploadUserLora(
  registryUrl: string,
  secret: string,
  userId: string,
  name: string,
  bytes: Buffer,
): Promise<UploadedLora> {
  const lora = userClient(registryUrl, secret, userId);
  const created = await lora.createLoraUpload({ name, sizeBytes: BigInt(bytes.length) });
  const blob = new BlockBlobClient(created.uploadUrl);
  const blockSize = Number(created.blockSizeBytes) || 4 * 1024 * 1024;
  const ids: string[] = [];
  for (let offset = 0; offset < bytes.length; offset += blockSize) {
    const id = Buffer.from(String(ids.length).padStart(6, "0")).toString("base64");
    const chunk = bytes.subarray(offset, offset + blockSize);
    await blob.stageBlock(id, chunk, chunk.length);
    ids.push(id);
  }
  await blob.commitBlockList(ids);
  const done = await lora.completeLoraUpload({ uploadId: created.upload?.uploadId ?? "" });
  const id = done.lora?.id ?? "";
  if (!id || done.lora?.sha256 !== sha256(bytes)) throw new Error(`upload of ${name} did not complete as expected`);
  return { id, userId, name, bytes, sha256: sha256(bytes) };
}

/** Puts a shared LoRA where the platform keeps them: models/loras/{name} in the shared container. */
export async function putSharedLora(connectionString: string, container: string, name: string, bytes: Buffer) {
  await BlobServiceClient.fromConnectionString(connectionString)
    .getContainerClient(container)
    .getBlockBlobClient(`models/loras/${name}`)
    .uploadData(bytes);
}

export function userClient(registryUrl: string, secret: string, userId: string): Client<typeof LoraService> {
  return createClient(
    LoraService,
    createGrpcTransport({
      baseUrl: registryUrl,
      interceptors: [bearerInterceptor(() => mintToken(secret, { subject: userId, roles: [] }))],
    }),
  );
}

export function adminClient(registryUrl: string, secret: string): Client<typeof LoraAdminService> {
  return createClient(
    LoraAdminService,
    createGrpcTransport({
      baseUrl: registryUrl,
      interceptors: [bearerInterceptor(() => mintToken(secret, { subject: "admin", roles: ["admin"] }))],
    }),
  );
}

/** The registry's resolver as a machine calls it (gRPC, machine token). */
export function resolverClient(registryUrl: string, secret: string): Client<typeof LoraResolverService> {
  return createClient(
    LoraResolverService,
    createGrpcTransport({
      baseUrl: registryUrl,
      interceptors: [bearerInterceptor(() => mintToken(secret, { subject: "gpu-machine", roles: ["machine"] }))],
    }),
  );
}

/** The machine cache as ComfyUI's node calls it: Connect JSON over HTTP/1.1. */
export function machineClient(
  url: string,
  secret: string,
  roles: Role[] = ["machine"],
): Client<typeof MachineCacheService> {
  return createClient(
    MachineCacheService,
    createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      useBinaryFormat: false,
      interceptors: [bearerInterceptor(() => mintToken(secret, { subject: "comfyui-node", roles }))],
    }),
  );
}

const signedPathOf = (blobPath: string) => (pathAndQuery: string) =>
  pathAndQuery.includes("sig=") && pathAndQuery.split("?")[0]!.endsWith(blobPath);

/** Whether the proxy saw a read of this blob with a signed URL (the machine's downloads). */
export const signedReadOf = (blobPath: string) => (r: SeenRequest) =>
  r.method === "GET" && signedPathOf(blobPath)(r.path);

/** A fault on the next `times` signed reads of this blob. */
export const onSignedReadsOf = (blobPath: string, fault: Fault, times = 1): FaultRule => ({
  method: "GET",
  path: signedPathOf(blobPath),
  times,
  fault,
});

/** Successful reads of a blob with a signed URL, as the proxy saw them. */
export function signedReads(proxy: FaultProxy, blobPath: string) {
  return proxy.requests.filter((r) => signedReadOf(blobPath)(r) && r.status >= 200 && r.status < 300);
}

/** The path of a user LoRA's blob in its container. */
export const userBlobPath = (l: UploadedLora) => `/users/${l.userId}/loras/${l.id}.safetensors`;
