// Progress of one transfer: bytes, rate and ETA. The rate is measured over a sliding window of recent
// samples, so a pause or a slow start does not weigh on the estimate for ever.

export interface Progress {
  /** Bytes storage has (or is receiving) of this upload, parts resumed from earlier runs included. */
  bytesSent: number;
  totalBytes: number;
  /** Bytes per second over the last few seconds (0 until measured). */
  bytesPerSecond: number;
  /** Seconds left at that rate; undefined until a rate is known. */
  etaSeconds: number | undefined;
  partsDone: number;
  partCount: number;
}

const WINDOW_MS = 5_000;

export class ProgressMeter {
  private done = 0;
  private partsDone = 0;
  private readonly samples: { at: number; done: number }[] = [];

  constructor(
    private readonly totalBytes: number,
    private readonly partCount: number,
    private readonly listener: ((progress: Progress) => void) | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Bytes already stored before this run started: counted, but not in the rate. */
  resumed(bytes: number, parts: number): void {
    this.done += bytes;
    this.partsDone += parts;
    this.samples.length = 0;
    this.emit();
  }

  advance(bytes: number): void {
    this.done += bytes;
    this.emit();
  }

  /** Bytes of an attempt that failed or was paused: they will be sent again. */
  rewind(bytes: number): void {
    this.done -= bytes;
    this.emit();
  }

  partDone(): void {
    this.partsDone += 1;
    this.emit();
  }

  snapshot(): Progress {
    const at = this.now();
    this.samples.push({ at, done: this.done });
    while (this.samples.length > 2 && this.samples[0].at < at - WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    const elapsedS = (at - first.at) / 1000;
    const rate = elapsedS > 0.2 ? Math.max(0, (this.done - first.done) / elapsedS) : 0;
    return {
      bytesSent: this.done,
      totalBytes: this.totalBytes,
      bytesPerSecond: rate,
      etaSeconds: rate > 0 ? (this.totalBytes - this.done) / rate : undefined,
      partsDone: this.partsDone,
      partCount: this.partCount,
    };
  }

  emit(): void {
    if (this.listener) this.listener(this.snapshot());
  }
}
