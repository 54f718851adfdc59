// Checksums of byte ranges of a Blob with hash-wasm (WASM, incremental). A range is read as one
// stream, hashed chunk by chunk as they arrive: hashing a 5 GiB part never holds more than a chunk
// in memory, and one read of a 16 MiB part costs the browser about half what four 4 MiB
// `arrayBuffer()` reads of it do (the reads, not the CRC32, are most of the time).
import { createCRC32, createSHA256, type IHasher } from "hash-wasm";

import { abortedError } from "./errors.js";

export type ChecksumName = "crc32" | "sha256";

function hasherFor(algorithm: ChecksumName): Promise<IHasher> {
  // CRC32 is IEEE 802.3 (hash-wasm's default polynomial), as S3's x-amz-checksum-crc32.
  return algorithm === "crc32" ? createCRC32() : createSHA256();
}

/** Lower-case hex digest (`crc32`: 8 digits) of `blob[start, end)`. */
export async function digestOfRange(
  algorithm: ChecksumName,
  blob: Blob,
  start: number,
  end: number,
  signal?: AbortSignal,
): Promise<string> {
  const hasher = await hasherFor(algorithm);
  hasher.init();
  const reader = blob.slice(start, end).stream().getReader();
  try {
    for (;;) {
      if (signal?.aborted) throw abortedError();
      const { done, value } = await reader.read();
      if (done) return hasher.digest("hex");
      hasher.update(value);
    }
  } finally {
    void reader.cancel().catch(() => undefined); // stops the read of an aborted range; no-op once done
  }
}
