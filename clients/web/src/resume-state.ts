// Where an interrupted upload is remembered across page reloads: one localStorage entry per file,
// keyed by what identifies the same file picked again (name, size, lastModified) and the endpoint.
// Only ids and the plan live here; which parts storage holds is always asked again (GetUpload).

export interface ResumeRecord {
  uploadId: string;
  fileId: string;
  contentType: string;
  partSize: number;
  partCount: number;
  savedAt: number;
}

/** The storage the engine keeps resume records in; `localStorage` by default, any Storage-like fake in tests. */
export interface ResumeStore {
  load(key: string): ResumeRecord | undefined;
  save(key: string, record: ResumeRecord): void;
  remove(key: string): void;
}

const PREFIX = "filestore-upload:";

export function resumeKey(scope: string, file: { name: string; size: number; lastModified: number }): string {
  return `${PREFIX}${scope}|${file.name}|${file.size}|${file.lastModified}`;
}

export class LocalStorageResumeStore implements ResumeStore {
  constructor(private readonly storage: Storage = globalThis.localStorage) {}

  load(key: string): ResumeRecord | undefined {
    const raw = this.storage.getItem(key);
    if (raw === null) return undefined;
    try {
      const record = JSON.parse(raw) as ResumeRecord;
      return typeof record.uploadId === "string" && record.uploadId ? record : undefined;
    } catch {
      return undefined; // not ours, or from an older format: start over
    }
  }

  save(key: string, record: ResumeRecord): void {
    this.storage.setItem(key, JSON.stringify(record));
  }

  remove(key: string): void {
    this.storage.removeItem(key);
  }
}

/** For pages that want no persistence (and for tests). */
export class MemoryResumeStore implements ResumeStore {
  private readonly records = new Map<string, ResumeRecord>();
  load(key: string): ResumeRecord | undefined {
    return this.records.get(key);
  }
  save(key: string, record: ResumeRecord): void {
    this.records.set(key, record);
  }
  remove(key: string): void {
    this.records.delete(key);
  }
}
