export * from "./gen/emprops/common/v1/error_reason_pb.js";
export * from "./gen/emprops/common/v1/item_error_pb.js";
export * from "./gen/emprops/common/v1/lora_reference_pb.js";
export * from "./gen/emprops/common/v1/lora_metadata_pb.js";
export * from "./gen/emprops/common/v1/quota_pb.js";
export * from "./gen/emprops/common/v1/cache_stats_pb.js";
export * from "./gen/emprops/lora/v1/lora_pb.js";
export * from "./gen/emprops/lora/v1/lora_service_pb.js";
export * from "./gen/emprops/lora/v1/lora_admin_service_pb.js";
export * from "./gen/emprops/lora/v1/lora_resolver_service_pb.js";
export * from "./gen/emprops/lora/v1/placement_service_pb.js";
export * from "./gen/emprops/blob/v1/blob_gateway_service_pb.js";
export * from "./gen/emprops/cache/v1/machine_cache_service_pb.js";
// GetCacheStats exists on both LoraAdminService and MachineCacheService: the
// flat names are the admin ones; the machine cache's are under cacheV1.
export {
  type GetCacheStatsRequest,
  GetCacheStatsRequestSchema,
  type GetCacheStatsResponse,
  GetCacheStatsResponseSchema,
} from "./gen/emprops/lora/v1/lora_admin_service_pb.js";
export * as cacheV1 from "./gen/emprops/cache/v1/machine_cache_service_pb.js";
export * from "./gen/emprops/events/v1/events_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export * as health from "./gen/grpc/health/v1/health_pb.js";
export * as reflectionV1 from "./gen/grpc/reflection/v1/reflection_pb.js";
export * as reflectionV1alpha from "./gen/grpc/reflection/v1alpha/reflection_pb.js";
export * from "./subjects.js";
export * from "./reasons.js";
export * from "./upload-blocks.js";
export * from "./format.js";
export * from "./lora-file-name.js";
