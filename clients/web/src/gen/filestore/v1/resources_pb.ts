// Resources shared by every Filestore service.
//
// Conventions that hold for every RPC in package filestore.v1:
//
// * Authentication: each call carries `authorization: Bearer <JWT>` in its gRPC metadata. The token's
//   `sub` claim is the principal, its `tenant` claim the tenant. A missing, expired or forged token is
//   UNAUTHENTICATED with ErrorInfo reason `TOKEN_MISSING`, `TOKEN_EXPIRED` or `TOKEN_INVALID`.
// * Identities: a tenant is `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`: 1-63 ASCII letters, digits, `.`, `_`
//   and `-`, starting with a letter or digit (so never `.` or `..`, and never `/`, NUL or whitespace:
//   a tenant is part of object keys). A subject is 1-255 characters, none of them a control, format
//   or surrogate character or a line or paragraph separator. A token whose `tenant` or `sub` claim
//   breaks this is UNAUTHENTICATED `TOKEN_CLAIM_INVALID` (ErrorInfo metadata `claim`). Tokens of
//   Filestore services carry the `service` role and the tenant `*`; no other token may carry `*`.
// * Requests: every RPC checks its request, once the token is verified and before anything else.
//   Each refusal is INVALID_ARGUMENT, names the offending field's path in ErrorInfo metadata `field`
//   (`file.visibility`, `requests[3].disposition`, `labels["k"]`) and changes nothing:
//   - bytes that do not decode (malformed protobuf, a string that is not UTF-8): `MALFORMED_REQUEST`
//     (no `field`);
//   - an enum number that names no value of its enum: `INVALID_ENUM_VALUE` (metadata `value` too);
//   - a Timestamp outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z or with nanos outside
//     0..999,999,999: `INVALID_TIMESTAMP`;
//   - a repeated or map field with more values than its limit: `TOO_MANY_VALUES` (metadata
//     `max_values`), or the reason its comment names. A field's comment states its limit; a field
//     that states none holds at most 1,000 values;
//   - a string holding U+0000 (NUL): `INVALID_STRING`;
//   - a field named `tenant` (the tenant grammar above; empty when not named), `owner` or `principal`
//     (the subject grammar), or `request_id` (1-64 printable ASCII characters; a UUID is the
//     convention), set to a value outside its grammar: `INVALID_TENANT`, `INVALID_OWNER`,
//     `INVALID_PRINCIPAL`, `INVALID_REQUEST_ID`.
//   What a value means (UNSPECIFIED where a value is required, a state a caller may not set) is
//   checked by each RPC, with the reasons its comment lists.
// * Errors: a failed call carries a `google.rpc.Status` in the `grpc-status-details-bin` trailer with
//   exactly one `google.rpc.ErrorInfo`. Its `domain` names the answering service (for example
//   `upload.filestore.v1`), its `reason` is a stable UPPER_SNAKE identifier clients may switch on:
//   `ErrorReason` (error_reason.proto) lists every reason with its status code and the ErrorInfo
//   metadata it carries. Besides those each RPC names: an unexpected failure is INTERNAL `INTERNAL`
//   (logged, never described); an RPC a service does not implement yet is UNIMPLEMENTED
//   `NOT_IMPLEMENTED_YET`; the metadata service's last checks of what it writes (`MISSING_FIELD`,
//   `SHA256_MISMATCH`, `BLOB_NOT_FOUND`, `BLOB_NOT_VERIFIED`, `BLOB_ALREADY_LINKED`) reach a caller
//   only through a defect. A status without an ErrorInfo (from a proxy, or a call that never reached
//   a service) is reported by the SDKs with its code's name as the reason: `UNKNOWN` (also for codes
//   not listed here), `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`,
//   `ABORTED`, `RESOURCE_EXHAUSTED`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `UNAVAILABLE`,
//   `DEADLINE_EXCEEDED`.
// * Transfers: bytes go to and from storage over presigned URLs, not through an RPC; the SDKs report
//   what goes wrong there with reasons of the same vocabulary: `URL_EXPIRED` (storage keeps refusing
//   fresh URLs as expired: check the clocks), `STORAGE_REJECTED` (a final 4xx), `STORAGE_UNAVAILABLE`
//   (retries exhausted), `CHECKSUM_MISMATCH` (the downloaded bytes differ from the file's SHA-256),
//   `LOCAL_FILE_CHANGED` (the file changed while it was being uploaded). The bridge that turns
//   storage notifications into events logs `BAD_NOTIFICATION` (one it cannot read) and
//   `FILER_STREAM_ENDED` (SeaweedFS ended its subscription, which it opens again); no caller gets them.
// * Tenancy: a resource of another tenant is NOT_FOUND, never PERMISSION_DENIED, so callers learn
//   nothing about other tenants' files.
// * Retries: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED with reason `RATE_LIMITED`
//   may be retried with exponential backoff and jitter. Mutating calls are safe to retry when they
//   carry a `request_id` (AIP-155): a replay answers the first answer. Other codes are final.
// * Dependencies: a service that cannot reach one of its own dependencies answers UNAVAILABLE
//   (retryable) with a reason naming it: `METADATA_UNAVAILABLE` (the metadata service),
//   `STORAGE_UNAVAILABLE` (object storage), `EVENT_PUBLISH_FAILED` or `AUDIT_UNAVAILABLE` (NATS),
//   `DATABASE_UNAVAILABLE` (the metadata service's database: a connection lost mid-call). It
//   answers before the caller's deadline: each call it makes to a dependency is bounded by the
//   dependency's own timeout (by default 10 s for the metadata service, 5 s per attempt and two
//   attempts for storage, 10 s for a NATS publish, tried again while a NATS cluster elects the
//   stream's leader) and by the time the caller has left, less a margin
//   (a tenth of it, between 50 ms and 1 s), so a caller with a short deadline still learns which
//   dependency did not answer instead of getting DEADLINE_EXCEEDED.
// * Browsers: the browser face (filestore-edge, docs/browser.md) serves the RPCs a user's token may
//   call over the Connect protocol and gRPC-Web, forwarded to the services, so a page gets the same
//   answers, codes and ErrorInfo as a gRPC caller. A page whose origin the deployment does not allow
//   (FILESTORE_CORS_ORIGINS) is refused PERMISSION_DENIED `ORIGIN_NOT_ALLOWED`; a service the face
//   cannot reach is UNAVAILABLE `UNAVAILABLE` (metadata `service`, retryable).
// * Ids are opaque strings (UUIDs today); clients must not parse them.

// @generated by protoc-gen-es v2.17.0 with parameter "target=ts,import_extension=js"
// @generated from file filestore/v1/resources.proto (package filestore.v1, syntax proto3)
/* eslint-disable */

import type { GenEnum, GenFile, GenMessage } from "@bufbuild/protobuf/codegenv2";
import { enumDesc, fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { file_google_protobuf_timestamp } from "@bufbuild/protobuf/wkt";
import type { Message } from "@bufbuild/protobuf";

/**
 * Describes the file filestore/v1/resources.proto.
 */
export const file_filestore_v1_resources: GenFile = /*@__PURE__*/
  fileDesc("ChxmaWxlc3RvcmUvdjEvcmVzb3VyY2VzLnByb3RvEgxmaWxlc3RvcmUudjEigwUKBEZpbGUSCgoCaWQYASABKAkSDgoGdGVuYW50GAIgASgJEg0KBW93bmVyGAMgASgJEgwKBG5hbWUYBCABKAkSHQoVZGVjbGFyZWRfY29udGVudF90eXBlGAUgASgJEhwKFHNuaWZmZWRfY29udGVudF90eXBlGAYgASgJEgwKBHNpemUYByABKAMSDgoGc2hhMjU2GAggASgJEigKBnN0YXR1cxgJIAEoDjIYLmZpbGVzdG9yZS52MS5GaWxlU3RhdHVzEhUKDXN0YXR1c19yZWFzb24YCiABKAkSLAoKdmlzaWJpbGl0eRgLIAEoDjIYLmZpbGVzdG9yZS52MS5WaXNpYmlsaXR5Ei4KBmxhYmVscxgMIAMoCzIeLmZpbGVzdG9yZS52MS5GaWxlLkxhYmVsc0VudHJ5EgwKBGV0YWcYDSABKAkSLwoLY3JlYXRlX3RpbWUYDiABKAsyGi5nb29nbGUucHJvdG9idWYuVGltZXN0YW1wEi8KC3VwZGF0ZV90aW1lGA8gASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcBIvCgtkZWxldGVfdGltZRgQIAEoCzIaLmdvb2dsZS5wcm90b2J1Zi5UaW1lc3RhbXASFAoMZGVkdXBsaWNhdGVkGBEgASgIEg0KBXN0b3JlGBIgASgJEhYKDnJlcGxpY2Ffc3RvcmVzGBMgAygJEhUKDXN0b3JhZ2VfY2xhc3MYFCABKAkSEAoIYXJjaGl2ZWQYFSABKAgSEgoKbGVnYWxfaG9sZBgWIAEoCBotCgtMYWJlbHNFbnRyeRILCgNrZXkYASABKAkSDQoFdmFsdWUYAiABKAk6AjgBIkkKBVN0b3JlEgwKBG5hbWUYASABKAkSDgoGcmVnaW9uGAIgASgJEhEKCXByb2JlX3VybBgDIAEoCRIPCgdkZWZhdWx0GAQgASgIIikKCFN0b3JlUnR0Eg0KBXN0b3JlGAEgASgJEg4KBnJ0dF9tcxgCIAEoBSLGAgoQUHJlc2lnbmVkUmVxdWVzdBIOCgZtZXRob2QYASABKAkSCwoDdXJsGAIgASgJEjwKB2hlYWRlcnMYAyADKAsyKy5maWxlc3RvcmUudjEuUHJlc2lnbmVkUmVxdWVzdC5IZWFkZXJzRW50cnkSQwoLZm9ybV9maWVsZHMYBCADKAsyLi5maWxlc3RvcmUudjEuUHJlc2lnbmVkUmVxdWVzdC5Gb3JtRmllbGRzRW50cnkSLwoLZXhwaXJlX3RpbWUYBSABKAsyGi5nb29nbGUucHJvdG9idWYuVGltZXN0YW1wGi4KDEhlYWRlcnNFbnRyeRILCgNrZXkYASABKAkSDQoFdmFsdWUYAiABKAk6AjgBGjEKD0Zvcm1GaWVsZHNFbnRyeRILCgNrZXkYASABKAkSDQoFdmFsdWUYAiABKAk6AjgBIl0KB1BhcnRVcmwSEwoLcGFydF9udW1iZXIYASABKAUSDAoEc2l6ZRgCIAEoAxIvCgdyZXF1ZXN0GAMgASgLMh4uZmlsZXN0b3JlLnYxLlByZXNpZ25lZFJlcXVlc3QiPwoMVXBsb2FkZWRQYXJ0EhMKC3BhcnRfbnVtYmVyGAEgASgFEgwKBHNpemUYAiABKAMSDAoEZXRhZxgDIAEoCSLFAwoGVXBsb2FkEgoKAmlkGAEgASgJEg8KB2ZpbGVfaWQYAiABKAkSJgoEa2luZBgDIAEoDjIYLmZpbGVzdG9yZS52MS5VcGxvYWRLaW5kEigKBXN0YXRlGAQgASgOMhkuZmlsZXN0b3JlLnYxLlVwbG9hZFN0YXRlEgwKBHNpemUYBSABKAMSEQoJcGFydF9zaXplGAYgASgDEhIKCnBhcnRfY291bnQYByABKAUSLwoLZXhwaXJlX3RpbWUYCCABKAsyGi5nb29nbGUucHJvdG9idWYuVGltZXN0YW1wEi8KB3JlcXVlc3QYCSABKAsyHi5maWxlc3RvcmUudjEuUHJlc2lnbmVkUmVxdWVzdBIoCglwYXJ0X3VybHMYCiADKAsyFS5maWxlc3RvcmUudjEuUGFydFVybBIyCg51cGxvYWRlZF9wYXJ0cxgLIAMoCzIaLmZpbGVzdG9yZS52MS5VcGxvYWRlZFBhcnQSQAoXcGFydF9jaGVja3N1bV9hbGdvcml0aG0YDCABKA4yHy5maWxlc3RvcmUudjEuQ2hlY2tzdW1BbGdvcml0aG0SFQoNc2Vzc2lvbl90b2tlbhgNIAEoCSLHAQoFR3JhbnQSCgoCaWQYASABKAkSDwoHZmlsZV9pZBgCIAEoCRIRCglwcmluY2lwYWwYAyABKAkSLAoKcGVybWlzc2lvbhgEIAEoDjIYLmZpbGVzdG9yZS52MS5QZXJtaXNzaW9uEi8KC2V4cGlyZV90aW1lGAUgASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcBIvCgtjcmVhdGVfdGltZRgGIAEoCzIaLmdvb2dsZS5wcm90b2J1Zi5UaW1lc3RhbXAilQEKCkRlcml2YXRpdmUSDwoHZmlsZV9pZBgBIAEoCRIMCgRraW5kGAIgASgJEgwKBHNpemUYAyABKAMSFAoMY29udGVudF90eXBlGAQgASgJEhMKC3N0b3JhZ2Vfa2V5GAUgASgJEi8KC2NyZWF0ZV90aW1lGAYgASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcCKOAgoQUHJvY2Vzc2luZ1Jlc3VsdBIPCgdmaWxlX2lkGAEgASgJEgwKBHN0ZXAYAiABKAkSKgoHb3V0Y29tZRgDIAEoDjIZLmZpbGVzdG9yZS52MS5TdGVwT3V0Y29tZRI8CgdkZXRhaWxzGAQgAygLMisuZmlsZXN0b3JlLnYxLlByb2Nlc3NpbmdSZXN1bHQuRGV0YWlsc0VudHJ5EhAKCGF0dGVtcHRzGAUgASgFEi8KC3VwZGF0ZV90aW1lGAYgASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcBouCgxEZXRhaWxzRW50cnkSCwoDa2V5GAEgASgJEg0KBXZhbHVlGAIgASgJOgI4ASJnCgVRdW90YRIOCgZ0ZW5hbnQYASABKAkSDQoFb3duZXIYAiABKAkSEwoLbGltaXRfYnl0ZXMYAyABKAMSEgoKdXNlZF9ieXRlcxgEIAEoAxIWCg5yZXNlcnZlZF9ieXRlcxgFIAEoAyrdAQoKRmlsZVN0YXR1cxIbChdGSUxFX1NUQVRVU19VTlNQRUNJRklFRBAAEhcKE0ZJTEVfU1RBVFVTX1BFTkRJTkcQARIYChRGSUxFX1NUQVRVU19VUExPQURFRBACEhoKFkZJTEVfU1RBVFVTX1BST0NFU1NJTkcQAxIVChFGSUxFX1NUQVRVU19SRUFEWRAEEhsKF0ZJTEVfU1RBVFVTX1FVQVJBTlRJTkVEEAUSFgoSRklMRV9TVEFUVVNfRkFJTEVEEAYSFwoTRklMRV9TVEFUVVNfREVMRVRFRBAHKlcKClZpc2liaWxpdHkSGgoWVklTSUJJTElUWV9VTlNQRUNJRklFRBAAEhYKElZJU0lCSUxJVFlfUFJJVkFURRABEhUKEVZJU0lCSUxJVFlfUFVCTElDEAIqkAEKClVwbG9hZEtpbmQSGwoXVVBMT0FEX0tJTkRfVU5TUEVDSUZJRUQQABIWChJVUExPQURfS0lORF9TSU5HTEUQARIbChdVUExPQURfS0lORF9QT1NUX1BPTElDWRACEhkKFVVQTE9BRF9LSU5EX01VTFRJUEFSVBADEhUKEVVQTE9BRF9LSU5EX0RFRFVQEAQqdAoRQ2hlY2tzdW1BbGdvcml0aG0SIgoeQ0hFQ0tTVU1fQUxHT1JJVEhNX1VOU1BFQ0lGSUVEEAASHAoYQ0hFQ0tTVU1fQUxHT1JJVEhNX0NSQzMyEAESHQoZQ0hFQ0tTVU1fQUxHT1JJVEhNX1NIQTI1NhACKpIBCgtVcGxvYWRTdGF0ZRIcChhVUExPQURfU1RBVEVfVU5TUEVDSUZJRUQQABIVChFVUExPQURfU1RBVEVfT1BFThABEhoKFlVQTE9BRF9TVEFURV9DT01QTEVURUQQAhIYChRVUExPQURfU1RBVEVfQUJPUlRFRBADEhgKFFVQTE9BRF9TVEFURV9FWFBJUkVEEAQqUwoKUGVybWlzc2lvbhIaChZQRVJNSVNTSU9OX1VOU1BFQ0lGSUVEEAASEwoPUEVSTUlTU0lPTl9SRUFEEAESFAoQUEVSTUlTU0lPTl9XUklURRACKqkBCgtTdGVwT3V0Y29tZRIcChhTVEVQX09VVENPTUVfVU5TUEVDSUZJRUQQABIYChRTVEVQX09VVENPTUVfUEVORElORxABEhcKE1NURVBfT1VUQ09NRV9QQVNTRUQQAhIXChNTVEVQX09VVENPTUVfRkFJTEVEEAMSGAoUU1RFUF9PVVRDT01FX1NLSVBQRUQQBBIWChJTVEVQX09VVENPTUVfRVJST1IQBWIGcHJvdG8z", [file_google_protobuf_timestamp]);

/**
 * A file: the small, queryable record of bytes held in object storage.
 *
 * @generated from message filestore.v1.File
 */
export type File = Message<"filestore.v1.File"> & {
  /**
   * Opaque id, assigned by the service. Output only.
   *
   * @generated from field: string id = 1;
   */
  id: string;

  /**
   * The tenant the file belongs to: from the creator's token. Output only, except that callers with
   * the `service` role name it when they create a file on a user's behalf.
   *
   * @generated from field: string tenant = 2;
   */
  tenant: string;

  /**
   * The principal that created the file: from the creator's token. Output only, except for callers
   * with the `service` role, as for `tenant`.
   *
   * @generated from field: string owner = 3;
   */
  owner: string;

  /**
   * Display name given by the client: metadata only, never part of a storage key. At most 255
   * characters after sanitizing (NFC); control, format and other invisible characters (bidirectional
   * overrides, zero-width spaces) are refused, except where they bind an emoji sequence: the
   * zero-width joiner between two emoji, a variation selector after a character it modifies, the
   * tags of a subdivision flag. A longer name is `INVALID_NAME` (ErrorInfo metadata `max_chars`),
   * wherever it is sent; the catalogue's schema holds the same limit.
   *
   * @generated from field: string name = 4;
   */
  name: string;

  /**
   * Content type declared by the client, e.g. `image/png`: `type/subtype`, at most 255 characters.
   *
   * @generated from field: string declared_content_type = 5;
   */
  declaredContentType: string;

  /**
   * Content type sniffed from the bytes by the processor; empty until sniffed. Output only.
   *
   * @generated from field: string sniffed_content_type = 6;
   */
  sniffedContentType: string;

  /**
   * Size in bytes as declared at upload creation and verified at completion; 0 for an empty file.
   *
   * @generated from field: int64 size = 7;
   */
  size: bigint;

  /**
   * Lower-case hex SHA-256 of the content: as declared by the client, or as computed by the processor.
   *
   * @generated from field: string sha256 = 8;
   */
  sha256: string;

  /**
   * Lifecycle state. Output only.
   *
   * @generated from field: filestore.v1.FileStatus status = 9;
   */
  status: FileStatus;

  /**
   * Why the file is QUARANTINED or FAILED, as a stable UPPER_SNAKE reason. Output only.
   *
   * @generated from field: string status_reason = 10;
   */
  statusReason: string;

  /**
   * Who may see the file without a grant.
   *
   * @generated from field: filestore.v1.Visibility visibility = 11;
   */
  visibility: Visibility;

  /**
   * User labels: at most 64 entries (`INVALID_LABELS` beyond); keys 1-63 characters of [a-z0-9_-],
   * values at most 255 characters.
   *
   * @generated from field: map<string, string> labels = 12;
   */
  labels: { [key: string]: string };

  /**
   * Changes on every update; send it back in UpdateFile to detect concurrent changes (AIP-154).
   *
   * @generated from field: string etag = 13;
   */
  etag: string;

  /**
   * When the record was created. Output only.
   *
   * @generated from field: google.protobuf.Timestamp create_time = 14;
   */
  createTime?: Timestamp | undefined;

  /**
   * When the record last changed. Output only.
   *
   * @generated from field: google.protobuf.Timestamp update_time = 15;
   */
  updateTime?: Timestamp | undefined;

  /**
   * When the file was deleted; unset unless status is DELETED. Output only.
   *
   * @generated from field: google.protobuf.Timestamp delete_time = 16;
   */
  deleteTime?: Timestamp | undefined;

  /**
   * Whether the file reads a copy of its content the tenant held before it: answered DEDUP at
   * creation, or uploaded and found, once verified, to be content the tenant already stored (its
   * own upload is then deleted). An uploader thus learns that the tenant held the bytes it sent,
   * never anything about content it did not send. Output only.
   *
   * @generated from field: bool deduplicated = 17;
   */
  deduplicated: boolean;

  /**
   * The store holding the original (chosen at upload by the tenant's residency, the client's hint,
   * then the deployment's default; see UploadService.ListStores). Derivatives are written there
   * too. Empty in an answer from a service older than stores means the store named `default`.
   * Output only.
   *
   * @generated from field: string store = 18;
   */
  store: string;

  /**
   * The other stores holding a verified copy of the original (replication, per tenant), in name
   * order. Downloads are signed for the nearest of `store` and these (the caller's hint). Output only.
   *
   * @generated from field: repeated string replica_stores = 19;
   */
  replicaStores: string[];

  /**
   * The storage class (tier) of the original in its store, as the catalogue records it:
   * `STANDARD` unless a lifecycle rule moved it (MetadataService.SetLifecycleRules). Output only.
   *
   * @generated from field: string storage_class = 20;
   */
  storageClass: string;

  /**
   * Whether the original is in an archive tier (`GLACIER`, `DEEP_ARCHIVE`) that cannot be read
   * directly: downloads answer FAILED_PRECONDITION `FILE_ARCHIVED` until
   * ProcessorService.RestoreFile brings it back. The catalogue's tier decides, not storage. Output
   * only.
   *
   * @generated from field: bool archived = 21;
   */
  archived: boolean;

  /**
   * Whether the file is under legal hold: it cannot be deleted, and lifecycle rules neither expire
   * nor purge it (MetadataService.SetLegalHold). Output only.
   *
   * @generated from field: bool legal_hold = 22;
   */
  legalHold: boolean;
};

/**
 * Describes the message filestore.v1.File.
 * Use `create(FileSchema)` to create a new message.
 */
export const FileSchema: GenMessage<File> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 0);

/**
 * An object store a deployment configures: a bucket in a region, reached at an endpoint.
 *
 * @generated from message filestore.v1.Store
 */
export type Store = Message<"filestore.v1.Store"> & {
  /**
   * The store's name: 1-63 characters of [a-z0-9-].
   *
   * @generated from field: string name = 1;
   */
  name: string;

  /**
   * The region it is in (as storage names it, e.g. `eu-central-1`).
   *
   * @generated from field: string region = 2;
   */
  region: string;

  /**
   * A URL the client may time (a HEAD or GET, unauthenticated: storage answers 403 quickly) to
   * measure its round trip to the store, then name the times in CreateUploadRequest.store_rtts.
   *
   * @generated from field: string probe_url = 3;
   */
  probeUrl: string;

  /**
   * Whether new files go here when neither residency nor the client's hint decides.
   *
   * @generated from field: bool default = 4;
   */
  default: boolean;
};

/**
 * Describes the message filestore.v1.Store.
 * Use `create(StoreSchema)` to create a new message.
 */
export const StoreSchema: GenMessage<Store> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 1);

/**
 * A round-trip time a client measured to a store (see UploadService.ListStores).
 *
 * @generated from message filestore.v1.StoreRtt
 */
export type StoreRtt = Message<"filestore.v1.StoreRtt"> & {
  /**
   * The store's name (Store.name).
   *
   * @generated from field: string store = 1;
   */
  store: string;

  /**
   * The measured round-trip time in milliseconds, >= 0.
   *
   * @generated from field: int32 rtt_ms = 2;
   */
  rttMs: number;
};

/**
 * Describes the message filestore.v1.StoreRtt.
 * Use `create(StoreRttSchema)` to create a new message.
 */
export const StoreRttSchema: GenMessage<StoreRtt> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 2);

/**
 * One HTTP request the client makes straight to storage, with no credentials of its own.
 *
 * @generated from message filestore.v1.PresignedRequest
 */
export type PresignedRequest = Message<"filestore.v1.PresignedRequest"> & {
  /**
   * HTTP method: `PUT` or `POST`.
   *
   * @generated from field: string method = 1;
   */
  method: string;

  /**
   * The URL to send the request to.
   *
   * @generated from field: string url = 2;
   */
  url: string;

  /**
   * Headers the client must send exactly as given (they are part of the signature).
   *
   * @generated from field: map<string, string> headers = 3;
   */
  headers: { [key: string]: string };

  /**
   * For POST policies: the form fields to send before the `file` field, in any order.
   *
   * @generated from field: map<string, string> form_fields = 4;
   */
  formFields: { [key: string]: string };

  /**
   * When the URL stops working; ask again (SignParts or GetUpload) after that.
   *
   * @generated from field: google.protobuf.Timestamp expire_time = 5;
   */
  expireTime?: Timestamp | undefined;
};

/**
 * Describes the message filestore.v1.PresignedRequest.
 * Use `create(PresignedRequestSchema)` to create a new message.
 */
export const PresignedRequestSchema: GenMessage<PresignedRequest> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 3);

/**
 * A presigned request for one part of a multipart upload.
 *
 * @generated from message filestore.v1.PartUrl
 */
export type PartUrl = Message<"filestore.v1.PartUrl"> & {
  /**
   * 1-based part number.
   *
   * @generated from field: int32 part_number = 1;
   */
  partNumber: number;

  /**
   * Size of this part in bytes (every part but the last has `Upload.part_size` bytes).
   *
   * @generated from field: int64 size = 2;
   */
  size: bigint;

  /**
   * The request to send the part with.
   *
   * @generated from field: filestore.v1.PresignedRequest request = 3;
   */
  request?: PresignedRequest | undefined;
};

/**
 * Describes the message filestore.v1.PartUrl.
 * Use `create(PartUrlSchema)` to create a new message.
 */
export const PartUrlSchema: GenMessage<PartUrl> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 4);

/**
 * A part that storage already holds, as listed by storage itself.
 *
 * @generated from message filestore.v1.UploadedPart
 */
export type UploadedPart = Message<"filestore.v1.UploadedPart"> & {
  /**
   * 1-based part number.
   *
   * @generated from field: int32 part_number = 1;
   */
  partNumber: number;

  /**
   * Size in bytes.
   *
   * @generated from field: int64 size = 2;
   */
  size: bigint;

  /**
   * Storage's ETag of the part.
   *
   * @generated from field: string etag = 3;
   */
  etag: string;
};

/**
 * Describes the message filestore.v1.UploadedPart.
 * Use `create(UploadedPartSchema)` to create a new message.
 */
export const UploadedPartSchema: GenMessage<UploadedPart> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 5);

/**
 * An upload session: how to send the bytes of one file, and how far it got.
 *
 * @generated from message filestore.v1.Upload
 */
export type Upload = Message<"filestore.v1.Upload"> & {
  /**
   * Opaque id. Output only.
   *
   * @generated from field: string id = 1;
   */
  id: string;

  /**
   * The file being uploaded. Output only.
   *
   * @generated from field: string file_id = 2;
   */
  fileId: string;

  /**
   * How the bytes travel. Output only.
   *
   * @generated from field: filestore.v1.UploadKind kind = 3;
   */
  kind: UploadKind;

  /**
   * Session state. Output only.
   *
   * @generated from field: filestore.v1.UploadState state = 4;
   */
  state: UploadState;

  /**
   * Declared size in bytes. Output only.
   *
   * @generated from field: int64 size = 5;
   */
  size: bigint;

  /**
   * Multipart only: size of every part but the last (5 MiB <= part_size <= 5 GiB). Output only.
   *
   * @generated from field: int64 part_size = 6;
   */
  partSize: bigint;

  /**
   * Multipart only: number of parts (at most 10,000). Output only.
   *
   * @generated from field: int32 part_count = 7;
   */
  partCount: number;

  /**
   * The session stops accepting bytes after this time and is reaped. Output only.
   *
   * @generated from field: google.protobuf.Timestamp expire_time = 8;
   */
  expireTime?: Timestamp | undefined;

  /**
   * SINGLE and POST_POLICY: the request that sends the bytes. Output only.
   *
   * @generated from field: filestore.v1.PresignedRequest request = 9;
   */
  request?: PresignedRequest | undefined;

  /**
   * MULTIPART: presigned URLs for the first parts; SignParts gives the rest. Output only.
   *
   * @generated from field: repeated filestore.v1.PartUrl part_urls = 10;
   */
  partUrls: PartUrl[];

  /**
   * MULTIPART: parts storage already holds (filled by GetUpload). Output only.
   *
   * @generated from field: repeated filestore.v1.UploadedPart uploaded_parts = 11;
   */
  uploadedParts: UploadedPart[];

  /**
   * MULTIPART: the checksum every part must be signed with (see CreateUploadRequest). Output only.
   *
   * @generated from field: filestore.v1.ChecksumAlgorithm part_checksum_algorithm = 12;
   */
  partChecksumAlgorithm: ChecksumAlgorithm;

  /**
   * MULTIPART, OPEN: an opaque capability for this upload session, handed to the caller by
   * CreateUpload and GetUpload. Pass it as SignPartsRequest.session_token and the broker signs part
   * URLs from the facts the token carries (key, storage upload, plan, checksum algorithm) without
   * reading the catalogue. Opaque: its format may change at any time, do not parse it. It is
   * signed by the broker and bound to the caller who received it (subject and tenant) and to this
   * upload; it is valid until `expire_time`. It is not a secret from the caller (it names nothing
   * the part URLs do not), but it grants nothing without the caller's own credentials either.
   * Storage, not the token, refuses parts of an upload that was completed or aborted meanwhile.
   * Empty for any other kind or state. Output only.
   *
   * @generated from field: string session_token = 13;
   */
  sessionToken: string;
};

/**
 * Describes the message filestore.v1.Upload.
 * Use `create(UploadSchema)` to create a new message.
 */
export const UploadSchema: GenMessage<Upload> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 6);

/**
 * Permission for one principal on one file.
 *
 * @generated from message filestore.v1.Grant
 */
export type Grant = Message<"filestore.v1.Grant"> & {
  /**
   * Opaque id. Output only.
   *
   * @generated from field: string id = 1;
   */
  id: string;

  /**
   * The file the grant is on.
   *
   * @generated from field: string file_id = 2;
   */
  fileId: string;

  /**
   * The principal (token `sub`) that receives the permission, within the file's tenant.
   *
   * @generated from field: string principal = 3;
   */
  principal: string;

  /**
   * What the principal may do.
   *
   * @generated from field: filestore.v1.Permission permission = 4;
   */
  permission: Permission;

  /**
   * When the grant stops working; unset means never.
   *
   * @generated from field: google.protobuf.Timestamp expire_time = 5;
   */
  expireTime?: Timestamp | undefined;

  /**
   * When the grant was made. Output only.
   *
   * @generated from field: google.protobuf.Timestamp create_time = 6;
   */
  createTime?: Timestamp | undefined;
};

/**
 * Describes the message filestore.v1.Grant.
 * Use `create(GrantSchema)` to create a new message.
 */
export const GrantSchema: GenMessage<Grant> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 7);

/**
 * A file made from a file by the processor: a thumbnail, extracted text.
 *
 * @generated from message filestore.v1.Derivative
 */
export type Derivative = Message<"filestore.v1.Derivative"> & {
  /**
   * The file it was made from.
   *
   * @generated from field: string file_id = 1;
   */
  fileId: string;

  /**
   * What it is, e.g. `thumbnail_256`, `text`. One derivative per kind and file.
   *
   * @generated from field: string kind = 2;
   */
  kind: string;

  /**
   * Size in bytes.
   *
   * @generated from field: int64 size = 3;
   */
  size: bigint;

  /**
   * Content type, e.g. `image/webp`, `text/plain; charset=utf-8`.
   *
   * @generated from field: string content_type = 4;
   */
  contentType: string;

  /**
   * Storage key (under `derivatives/{tenant}/{file_id}/`). Output only.
   *
   * @generated from field: string storage_key = 5;
   */
  storageKey: string;

  /**
   * When it was made. Output only.
   *
   * @generated from field: google.protobuf.Timestamp create_time = 6;
   */
  createTime?: Timestamp | undefined;
};

/**
 * Describes the message filestore.v1.Derivative.
 * Use `create(DerivativeSchema)` to create a new message.
 */
export const DerivativeSchema: GenMessage<Derivative> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 8);

/**
 * The result of one pipeline step on one file.
 *
 * @generated from message filestore.v1.ProcessingResult
 */
export type ProcessingResult = Message<"filestore.v1.ProcessingResult"> & {
  /**
   * The file processed.
   *
   * @generated from field: string file_id = 1;
   */
  fileId: string;

  /**
   * The step: `integrity`, `sniff`, `scan`, `thumbnail`, `ocr`.
   *
   * @generated from field: string step = 2;
   */
  step: string;

  /**
   * What happened.
   *
   * @generated from field: filestore.v1.StepOutcome outcome = 3;
   */
  outcome: StepOutcome;

  /**
   * Step-specific details, e.g. `{"sha256": "..."}` or `{"signature": "Eicar-Test-Signature"}`; at
   * most 64 entries.
   *
   * @generated from field: map<string, string> details = 4;
   */
  details: { [key: string]: string };

  /**
   * How many times the step ran.
   *
   * @generated from field: int32 attempts = 5;
   */
  attempts: number;

  /**
   * When the result last changed. Output only.
   *
   * @generated from field: google.protobuf.Timestamp update_time = 6;
   */
  updateTime?: Timestamp | undefined;
};

/**
 * Describes the message filestore.v1.ProcessingResult.
 * Use `create(ProcessingResultSchema)` to create a new message.
 */
export const ProcessingResultSchema: GenMessage<ProcessingResult> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 9);

/**
 * Storage accounting of a tenant, or of one owner within a tenant.
 *
 * @generated from message filestore.v1.Quota
 */
export type Quota = Message<"filestore.v1.Quota"> & {
  /**
   * The tenant.
   *
   * @generated from field: string tenant = 1;
   */
  tenant: string;

  /**
   * The owner; empty for the tenant-wide quota.
   *
   * @generated from field: string owner = 2;
   */
  owner: string;

  /**
   * Most bytes that may be used plus reserved.
   *
   * @generated from field: int64 limit_bytes = 3;
   */
  limitBytes: bigint;

  /**
   * Bytes of completed uploads.
   *
   * @generated from field: int64 used_bytes = 4;
   */
  usedBytes: bigint;

  /**
   * Bytes reserved by uploads in flight.
   *
   * @generated from field: int64 reserved_bytes = 5;
   */
  reservedBytes: bigint;
};

/**
 * Describes the message filestore.v1.Quota.
 * Use `create(QuotaSchema)` to create a new message.
 */
export const QuotaSchema: GenMessage<Quota> = /*@__PURE__*/
  messageDesc(file_filestore_v1_resources, 10);

/**
 * The lifecycle of a file. Transitions are enforced by the metadata service:
 * PENDING -> UPLOADED -> PROCESSING -> READY | QUARANTINED | FAILED, and DELETED from any state.
 * Any other transition is FAILED_PRECONDITION with reason `ILLEGAL_TRANSITION`; re-applying the
 * current state is a harmless no-op, because event redelivery is normal.
 *
 * @generated from enum filestore.v1.FileStatus
 */
export enum FileStatus {
  /**
   * Not set; never stored.
   *
   * @generated from enum value: FILE_STATUS_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The record exists; the bytes are not (yet) in storage.
   *
   * @generated from enum value: FILE_STATUS_PENDING = 1;
   */
  PENDING = 1,

  /**
   * The bytes are in storage and their size (and declared checksum) were verified by the broker.
   *
   * @generated from enum value: FILE_STATUS_UPLOADED = 2;
   */
  UPLOADED = 2,

  /**
   * A processor worker runs the pipeline.
   *
   * @generated from enum value: FILE_STATUS_PROCESSING = 3;
   */
  PROCESSING = 3,

  /**
   * Every required pipeline step passed; the file may be downloaded.
   *
   * @generated from enum value: FILE_STATUS_READY = 4;
   */
  READY = 4,

  /**
   * Malware was found, the content does not match its declared digest, or the stored bytes were
   * replaced after they were verified (`CONTENT_CHANGED`, also from READY); never served.
   *
   * @generated from enum value: FILE_STATUS_QUARANTINED = 5;
   */
  QUARANTINED = 5,

  /**
   * The pipeline gave up after its retries; `status_reason` says why.
   *
   * @generated from enum value: FILE_STATUS_FAILED = 6;
   */
  FAILED = 6,

  /**
   * Deleted by its owner; the record is kept (soft delete), the bytes are released.
   *
   * @generated from enum value: FILE_STATUS_DELETED = 7;
   */
  DELETED = 7,
}

/**
 * Describes the enum filestore.v1.FileStatus.
 */
export const FileStatusSchema: GenEnum<FileStatus> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 0);

/**
 * Who may see a file without a grant.
 *
 * @generated from enum filestore.v1.Visibility
 */
export enum Visibility {
  /**
   * Not set; treated as VISIBILITY_PRIVATE.
   *
   * @generated from enum value: VISIBILITY_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Only the owner and principals holding a grant.
   *
   * @generated from enum value: VISIBILITY_PRIVATE = 1;
   */
  PRIVATE = 1,

  /**
   * Anyone; downloads are served through the CDN base URL when one is configured.
   *
   * @generated from enum value: VISIBILITY_PUBLIC = 2;
   */
  PUBLIC = 2,
}

/**
 * Describes the enum filestore.v1.Visibility.
 */
export const VisibilitySchema: GenEnum<Visibility> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 1);

/**
 * How the bytes of an upload travel to storage.
 *
 * @generated from enum filestore.v1.UploadKind
 */
export enum UploadKind {
  /**
   * Not set: the broker chooses SINGLE or MULTIPART from the declared size (SINGLE for an empty file,
   * MULTIPART above the multipart threshold or when a part size is asked for).
   *
   * @generated from enum value: UPLOAD_KIND_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * One presigned PUT.
   *
   * @generated from enum value: UPLOAD_KIND_SINGLE = 1;
   */
  SINGLE = 1,

  /**
   * A presigned POST policy for browser forms; it pins the key, content type and exact length (not
   * the SHA-256, which the processor verifies).
   *
   * @generated from enum value: UPLOAD_KIND_POST_POLICY = 2;
   */
  POST_POLICY = 2,

  /**
   * An S3 multipart upload with one presigned URL per part; never for 0 bytes.
   *
   * @generated from enum value: UPLOAD_KIND_MULTIPART = 3;
   */
  MULTIPART = 3,

  /**
   * No bytes move: the caller already owns a file of the tenant's verified content with the declared
   * SHA-256 (only owners get this; see UploadService.CreateUpload).
   *
   * @generated from enum value: UPLOAD_KIND_DEDUP = 4;
   */
  DEDUP = 4,
}

/**
 * Describes the enum filestore.v1.UploadKind.
 */
export const UploadKindSchema: GenEnum<UploadKind> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 2);

/**
 * The checksum every part of a multipart upload carries, verified by storage.
 *
 * @generated from enum filestore.v1.ChecksumAlgorithm
 */
export enum ChecksumAlgorithm {
  /**
   * Parts carry no checksum.
   *
   * @generated from enum value: CHECKSUM_ALGORITHM_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * CRC32 (IEEE 802.3), S3's `x-amz-checksum-crc32`: what AWS SDKs send by default.
   *
   * @generated from enum value: CHECKSUM_ALGORITHM_CRC32 = 1;
   */
  CRC32 = 1,

  /**
   * SHA-256, S3's `x-amz-checksum-sha256`: several times the CPU of CRC32, on storage too.
   *
   * @generated from enum value: CHECKSUM_ALGORITHM_SHA256 = 2;
   */
  SHA256 = 2,
}

/**
 * Describes the enum filestore.v1.ChecksumAlgorithm.
 */
export const ChecksumAlgorithmSchema: GenEnum<ChecksumAlgorithm> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 3);

/**
 * The state of an upload session.
 *
 * @generated from enum filestore.v1.UploadState
 */
export enum UploadState {
  /**
   * Not set; never stored.
   *
   * @generated from enum value: UPLOAD_STATE_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Accepting bytes.
   *
   * @generated from enum value: UPLOAD_STATE_OPEN = 1;
   */
  OPEN = 1,

  /**
   * Completed; the file is UPLOADED or later.
   *
   * @generated from enum value: UPLOAD_STATE_COMPLETED = 2;
   */
  COMPLETED = 2,

  /**
   * Aborted by the client; the reservation was released.
   *
   * @generated from enum value: UPLOAD_STATE_ABORTED = 3;
   */
  ABORTED = 3,

  /**
   * Expired before completion and reaped.
   *
   * @generated from enum value: UPLOAD_STATE_EXPIRED = 4;
   */
  EXPIRED = 4,
}

/**
 * Describes the enum filestore.v1.UploadState.
 */
export const UploadStateSchema: GenEnum<UploadState> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 4);

/**
 * The permission a grant gives.
 *
 * @generated from enum filestore.v1.Permission
 */
export enum Permission {
  /**
   * Not set; invalid in requests.
   *
   * @generated from enum value: PERMISSION_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * May download the file and its derivatives.
   *
   * @generated from enum value: PERMISSION_READ = 1;
   */
  READ = 1,

  /**
   * May also update the file's metadata.
   *
   * @generated from enum value: PERMISSION_WRITE = 2;
   */
  WRITE = 2,
}

/**
 * Describes the enum filestore.v1.Permission.
 */
export const PermissionSchema: GenEnum<Permission> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 5);

/**
 * The outcome of one pipeline step.
 *
 * @generated from enum filestore.v1.StepOutcome
 */
export enum StepOutcome {
  /**
   * Not set.
   *
   * @generated from enum value: STEP_OUTCOME_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Not run yet, or running.
   *
   * @generated from enum value: STEP_OUTCOME_PENDING = 1;
   */
  PENDING = 1,

  /**
   * The step passed.
   *
   * @generated from enum value: STEP_OUTCOME_PASSED = 2;
   */
  PASSED = 2,

  /**
   * The step ran and found a problem with the content (malware, digest mismatch).
   *
   * @generated from enum value: STEP_OUTCOME_FAILED = 3;
   */
  FAILED = 3,

  /**
   * The step does not apply to this content type.
   *
   * @generated from enum value: STEP_OUTCOME_SKIPPED = 4;
   */
  SKIPPED = 4,

  /**
   * The step could not run (an error); it is retried until the pipeline gives up.
   *
   * @generated from enum value: STEP_OUTCOME_ERROR = 5;
   */
  ERROR = 5,
}

/**
 * Describes the enum filestore.v1.StepOutcome.
 */
export const StepOutcomeSchema: GenEnum<StepOutcome> = /*@__PURE__*/
  enumDesc(file_filestore_v1_resources, 6);

