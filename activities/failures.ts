import { ApplicationFailure } from '@temporalio/common';
import { ZodError } from 'zod';
import type { FailureType } from '../src/domain/failures.js';

/**
 * One rule for every activity: an error that says `retryable: false` (bad input, not found,
 * conflict, invalid table…) becomes a non-retryable ApplicationFailure so the saga compensates
 * at once; anything else is rethrown and Temporal retries it with backoff.
 */
export function classify(err: unknown): never {
  if (err instanceof ApplicationFailure) throw err;
  if (err instanceof ZodError) {
    const first = err.issues[0];
    throw ApplicationFailure.nonRetryable(
      `invalid input: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : err.message}`,
      'InvalidInput' satisfies FailureType,
      err.issues.map((i) => ({ field: i.path.join('.'), message: i.message })),
    );
  }
  const e = err as { name?: string; message?: string; retryable?: boolean };
  if (e && e.retryable === false) {
    throw ApplicationFailure.nonRetryable(e.message ?? String(err), e.name ?? 'Error', detailsOf(err));
  }
  throw err;
}

function detailsOf(err: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err as object)) {
    if (['string', 'number', 'boolean'].includes(typeof v)) out[k] = v;
  }
  return out;
}

/** Wrap each function of an activity object with `classify`. */
export function withClassification<T extends Record<string, (...args: never[]) => Promise<unknown>>>(
  acts: T,
): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(acts)) {
    out[name] = async (...args: never[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        classify(err);
      }
    };
  }
  return out as T;
}

/** Mark a plain error as permanent. */
export function permanent(message: string, type: FailureType, details?: unknown): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, type, details);
}
