import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createRegistryClients, uploadLora } from "@emprops/lora-cli";
import { debianGrpcTools, kohyaMetadata, runDebianPython, writeLoraFile } from "@emprops/testkit";
import { markedBlock, ROOT } from "./support/readme-blocks.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/**
 * Python clients as the README shows them: the standard-library Connect JSON
 * call, and gRPC stubs generated from proto/ with Debian's protoc and
 * grpc_python_plugin (the README's recipe, run as printed), used from
 * Debian's python3 with grpcio against the running stack.
 */
const tools = debianGrpcTools();
(tools ? describe : describe.skip)("Python clients generated from proto/ against the running stack", () => {
  let t: TestStack;
  let dir: string;
  let stubs: string;
  let loraId: string;
  let sizeBytes: number;

  /** A README block with the documented ports replaced by the stack's. */
  const localize = (block: string) =>
    block
      .replaceAll("127.0.0.1:50051", t.stack.registry.url.replace("http://", ""))
      .replaceAll("127.0.0.1:50053", t.stack.machineCache.url.replace("http://", ""));
  const python = (script: string, vars: Record<string, string>) =>
    runDebianPython(
      tools!,
      Object.entries(vars)
        .map(([k, v]) => `${k} = ${JSON.stringify(v)}\n`)
        .join("") + script,
      [],
      { pythonPath: [stubs] },
    );

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "clients-python-"));
    stubs = path.join(dir, "lora_client");
    const recipe = markedBlock("README.md", "python-stubs").replaceAll("OUT=lora_client", `OUT=${stubs}`);
    await promisify(execFile)("bash", ["-e", "-c", recipe], { cwd: ROOT });
    t = await startTestStack("clients-python");
    const file = path.join(dir, "python_style.safetensors");
    writeLoraFile(file, 64 * 1024, kohyaMetadata("python_style"));
    sizeBytes = statSync(file).size;
    ({
      lora: { id: loraId },
    } = await uploadLora({ client: createRegistryClients(t.stack.registry.url, t.userToken).lora, file }));
  });

  afterAll(async () => {
    await t?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the recipe keeps grpcio's own grpc package importable: no top-level grpc in the stubs", () => {
    expect(readdirSync(stubs).sort()).toEqual(["emprops", "google", "health", "reflection"]);
  });

  test("the README's JSON example prints the path, and an item error with its reason", async () => {
    const block = localize(markedBlock("README.md", "python-json-client"));
    const vars = { USER_ID: t.userId, MACHINE_TOKEN: t.machineToken };
    expect(await python(block, { ...vars, LORA_ID: loraId })).toBe(
      `${path.join(t.userLoraDir, t.userId, `${loraId}-python_style.safetensors`)}\n`,
    );
    expect(await python(block, { ...vars, LORA_ID: "999999" })).toBe(
      "LoRA 999999: LoRA with ID 999999 not found or access denied [LORA_NOT_FOUND]\n",
    );
  });

  test("the README's gRPC example reads the quota and a refusal's reason from grpc-status-details-bin", async () => {
    const out = await python(localize(markedBlock("README.md", "python-grpc-client")), { TOKEN: t.userToken });
    expect(out).toBe(
      `${sizeBytes} of 10737418240 bytes used\nNOT_FOUND LORA_NOT_FOUND LoRA with ID 42 not found or access denied\n`,
    );
  });

  test("ListLoras, GetQuota, EnsureLoras and health through the generated stubs", async () => {
    const script = `
import json
import grpc
from emprops.lora.v1 import lora_service_pb2 as lora_pb, lora_service_pb2_grpc as lora_grpc
from emprops.cache.v1 import machine_cache_service_pb2 as cache_pb, machine_cache_service_pb2_grpc as cache_grpc
from emprops.common.v1 import error_reason_pb2, lora_reference_pb2
from health.v1 import health_pb2, health_pb2_grpc

registry = grpc.insecure_channel(REGISTRY)
lora = lora_grpc.LoraServiceStub(registry)
user = (("authorization", "Bearer " + TOKEN),)
listed = lora.ListLoras(lora_pb.ListLorasRequest(page_size=10), metadata=user)
quota = lora.GetQuota(lora_pb.GetQuotaRequest(), metadata=user).quota
cache = cache_grpc.MachineCacheServiceStub(grpc.insecure_channel(MACHINE_CACHE))
refs = [lora_reference_pb2.LoraReference(source=lora_reference_pb2.LORA_SOURCE_USER, identifier=i) for i in (LORA_ID, "999999")]
ensured = cache.EnsureLoras(cache_pb.EnsureLorasRequest(job_id="job-py", user_id=USER_ID, refs=refs),
                            metadata=(("authorization", "Bearer " + MACHINE_TOKEN),))
health = health_pb2_grpc.HealthStub(registry).Check(health_pb2.HealthCheckRequest())
print(json.dumps({
    "names": [l.name for l in listed.loras],
    "used": quota.used_bytes, "count": quota.used_count,
    "results": [r.absolute_path if not r.HasField("error") else
                [r.error.code, error_reason_pb2.ErrorReason.Name(r.error.reason)] for r in ensured.results],
    "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
}))
`;
    const out = JSON.parse(
      await python(script, {
        REGISTRY: t.stack.registry.url.replace("http://", ""),
        MACHINE_CACHE: t.stack.machineCache.url.replace("http://", ""),
        TOKEN: t.userToken,
        MACHINE_TOKEN: t.machineToken,
        USER_ID: t.userId,
        LORA_ID: loraId,
      }),
    ) as unknown;
    expect(out).toEqual({
      names: ["python_style.safetensors"],
      used: sizeBytes,
      count: 1,
      results: [
        path.join(t.userLoraDir, t.userId, `${loraId}-python_style.safetensors`),
        ["not_found", "LORA_NOT_FOUND"],
      ],
      health: "SERVING",
    });
  });
});
