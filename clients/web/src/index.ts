// @filestore/web: the browser client of Filestore. See clients/web/README.md.
export { createFilestore, SETTLED_STATUSES, type Filestore, type FilestoreConfig, type WatchOptions } from "./filestore.js";
export {
  UploadEngine,
  UploadTask,
  defaultEngineOptions,
  type EngineOptions,
  type UploadApi,
  type UploadEvent,
  type UploadRequest,
  type UploadResult,
} from "./engine.js";
export { ClientReason, FilestoreError, errorFromConnect } from "./errors.js";
export type { Progress } from "./progress.js";
export { LocalStorageResumeStore, MemoryResumeStore, type ResumeRecord, type ResumeStore } from "./resume-state.js";
export { defaultRetryPolicy, type RetryPolicy } from "./retry.js";
export { digestOfRange, type ChecksumName } from "./hashing.js";
export { FileStatus, UploadKind, UploadState, ChecksumAlgorithm } from "./gen/filestore/v1/resources_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
export { create, fromJson, toJson } from "@bufbuild/protobuf";
export * as uploadMessages from "./gen/filestore/v1/upload_service_pb.js";
export * as resourceMessages from "./gen/filestore/v1/resources_pb.js";
