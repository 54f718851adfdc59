// When and how long to wait before trying again: exponential backoff with full jitter (a delay drawn
// uniformly between 0 and the exponential cap), so that many browsers that failed together do not
// come back in lockstep. The same rule as the Python SDK (filestore.client.retry).
import { abortedError, errorFromConnect, type FilestoreError } from "./errors.js";

export interface RetryPolicy {
  /** Tries in all, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Source of uniform [0, 1) numbers; tests pass a fixed one. */
  uniform: () => number;
}

export const defaultRetryPolicy: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 10_000,
  uniform: Math.random,
};

/** The wait before retry number `retry` (1-based). */
export function backoffDelayMs(policy: RetryPolicy, retry: number): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(retry - 1, 60));
  return policy.uniform() * cap;
}

/** HTTP statuses from storage worth retrying unchanged: 408/429 and the gateway family. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status <= 504 && status !== 501);
}

/** Resolves after `ms`, or rejects with the aborted error as soon as `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError());
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `call()`, its failure turned into a FilestoreError and retried while the API says it may be.
 * Only calls safe to repeat belong here: reads, signing, and mutations carrying a `requestId`. */
export async function callWithRetries<T>(
  call: () => Promise<T>,
  policy: RetryPolicy,
  signal?: AbortSignal,
  onRetry?: (attempt: number, error: FilestoreError, delayMs: number) => void,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortedError();
    try {
      return await call();
    } catch (raw) {
      if (signal?.aborted) throw abortedError();
      const error = errorFromConnect(raw);
      if (!error.retryable || attempt >= policy.maxAttempts) throw error;
      const delay = backoffDelayMs(policy, attempt);
      onRetry?.(attempt, error, delay);
      await sleep(delay, signal);
    }
  }
}
