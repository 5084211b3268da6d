export { startPostgres, type StartedPostgres } from "./infra/postgres.js";
export { startNatsServer, type NatsServerOptions, type StartedNatsServer } from "./infra/nats-server.js";
export {
  startAzurite,
  azuriteConnectionString,
  blobEndpointOf,
  AZURITE_ACCOUNT_NAME,
  AZURITE_ACCOUNT_KEY,
  type StartedAzurite,
} from "./infra/azurite.js";
export { type ServiceOptions } from "./infra/service-options.js";
export { spawnService, type SpawnServiceOptions, type SpawnedService } from "./infra/spawn-service.js";
export { provideTestDependencies, type TestDependencies, type TestEnvVars } from "./test-dependencies.js";
export { testEnv, type TestEnv } from "./test-env.js";
export {
  createTestDatabase,
  testNamespace,
  createTestContainers,
  type TestDatabase,
  type TestNamespace,
  type TestContainers,
} from "./isolation.js";
export {
  findProtoRoot,
  loadServiceDefinition,
  createGrpcJsClient,
  grpcUnary,
  grpcServerStream,
  listServicesViaReflection,
  DEFAULT_LOADER_OPTIONS,
  DEFAULT_DEADLINE_MS,
  type GrpcJsClientOptions,
  type GrpcCallOptions,
} from "./grpc-js-client.js";
export { default as jestGlobalSetup } from "./jest-global-setup.js";
export { default as jestGlobalTeardown } from "./jest-global-teardown.js";
export { testImage, pngBomb, jpegClaiming, truncated } from "./fixtures/images.js";
export {
  DTYPE_BYTES,
  fillerBytes,
  tensorBytes,
  safetensorsHeader,
  padHeader,
  assembleSafetensors,
  buildSafetensors,
  loraTensors,
  kohyaMetadata,
  randomLoraSafetensors,
  writeLoraFile,
  type TensorSpec,
  type TensorEntry,
} from "./fixtures/safetensors.js";
export {
  PickleWriter,
  stateDictPickle,
  callPickle,
  legacyTorchFile,
  pushTensor,
  orderedDictPickle,
  LORA_TENSORS,
  type TensorCall,
  type StateDictTensor,
} from "./fixtures/pickle.js";
export {
  buildZip,
  localRecord,
  torchZip,
  tarArchive,
  loraStorages,
  type ZipEntrySpec,
  type CentralRecord,
  type ZipOptions,
} from "./fixtures/torch-zip.js";
export { chunked, prng } from "./fixtures/feed.js";
export { safetensorsReferenceAccepts } from "./fixtures/safetensors-reference.js";
export {
  SAFETENSORS_DTYPE_OF_TORCH,
  torchSaveFixture,
  torchSaveFixtures,
  type TorchSaveFixtures,
  type TorchSaveTensor,
} from "./fixtures/torch-save.js";
export {
  startFaultProxy,
  createProxiedTestContainers,
  putBlockIndex,
  type Fault,
  type FaultRule,
  type FaultProxy,
  type FaultProxyOptions,
  type LinkShape,
  type SeenRequest,
} from "./fault-proxy.js";
export { eventually, type EventuallyOptions } from "./eventually.js";
export { readStream, publishToStream, type StreamMessage } from "./nats-stream.js";
export { rpcFailure, type RpcFailure } from "./rpc-failure.js";
export { debianGrpcTools, runDebianPython, DEBIAN_GRPC_PACKAGES, type DebianGrpcTools } from "./debian-grpc.js";
export { freePort } from "./infra/free-port.js";
