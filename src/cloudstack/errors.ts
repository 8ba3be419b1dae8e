/**
 * CloudStack failures, typed and classified. `retryable` drives the sagas' retry policies
 * (activities/failures.ts turns `retryable: false` into a non-retryable failure): parameter,
 * permission, unsupported and account-limit errors will not change on retry; internal, capacity,
 * unavailable, allocation and in-use errors (and network faults) may.
 * Codes: shared/reference/cloudstack.md fact 6.
 */
export const RETRYABLE_CODES: ReadonlySet<number> = new Set([
  429, // too many requests
  530, // internal error
  533, // insufficient capacity
  534, // resource unavailable
  535, // resource allocation
  536, // resource in use
]);

/** Whether CloudStack's `errorcode` is worth retrying (401, 431, 432, 531, 532, … are not). */
export function isRetryableCode(errorcode: number): boolean {
  return RETRYABLE_CODES.has(errorcode);
}

/** The text CloudStack gives for an unknown UUID (ParamProcessWorker; reference §2.5). */
const NOT_FOUND_TEXT = /entity does not exist|Unable to find volume/i;

export class CloudStackError extends Error {
  readonly retryable: boolean;
  constructor(
    readonly command: string,
    readonly errorcode: number,
    readonly errortext: string,
    readonly cserrorcode?: number,
    /** True when the failure came from an async job (jobstatus 2), not the HTTP call. */
    readonly inJob = false,
  ) {
    super(
      `CloudStack ${command} failed${inJob ? ' in its job' : ''}: ${errorcode}${cserrorcode ? `/${cserrorcode}` : ''} ${errortext}`,
    );
    this.name = 'CloudStackError';
    this.retryable = isRetryableCode(errorcode);
  }

  /** Real clients detect "no such entity" from this text (cloudstack-go GetVolumeByID). */
  get notFound(): boolean {
    return this.errorcode === 431 && NOT_FOUND_TEXT.test(this.errortext);
  }
}

/** Transport trouble: no reply, reset, timeout. The call may or may not have acted. */
export class CloudStackNetworkError extends Error {
  readonly retryable = true;
  /** The request timeout fired (as opposed to a refused or dropped connection). */
  readonly timedOut: boolean;
  constructor(
    readonly command: string,
    cause: unknown,
  ) {
    super(`CloudStack ${command}: no usable reply (${(cause as Error)?.message ?? String(cause)})`, {
      cause,
    });
    this.name = 'CloudStackNetworkError';
    this.timedOut = (cause as Error)?.name === 'TimeoutError';
  }
}

/** The volume is attached to another VM than the one wanted: a decision for the caller. */
export class CloudStackConflictError extends Error {
  readonly retryable = false;
  constructor(
    readonly volumeId: string,
    readonly attachedTo: string,
    readonly wanted: string | null,
  ) {
    super(`volume ${volumeId} is attached to VM ${attachedTo}${wanted ? `, not ${wanted}` : ''}`);
    this.name = 'CloudStackConflictError';
  }
}

/** Named 'VolumeNotFound': the workflows list that type as non-retryable. */
export class CloudStackNotFoundError extends Error {
  readonly retryable = false;
  constructor(readonly volumeId: string) {
    super(`volume ${volumeId} does not exist in CloudStack`);
    this.name = 'VolumeNotFound';
  }
}

/** The job is still pending after the client's async timeout; a retry resumes polling it. */
export class CloudStackJobTimeoutError extends Error {
  readonly retryable = true;
  constructor(
    readonly command: string,
    readonly jobId: string,
    waitedMs: number,
  ) {
    super(`CloudStack ${command} job ${jobId} still pending after ${waitedMs} ms`);
    this.name = 'CloudStackJobTimeoutError';
  }
}

/** Bad client configuration; `fields` names every offending field. */
export class CloudStackConfigError extends Error {
  readonly retryable = false;
  constructor(readonly fields: { field: string; message: string }[]) {
    super(`CloudStack config: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`);
    this.name = 'CloudStackConfigError';
  }
}

/** Whether an error from this client is worth retrying (unknown errors: no). */
export function isRetryable(err: unknown): boolean {
  return (err as { retryable?: unknown })?.retryable === true;
}
