/**
 * CloudStack failures, typed and classified. `retryable` drives the sagas' retry policies:
 * parameter, permission and unsupported errors will not change on retry; internal, capacity,
 * unavailable, allocation and in-use errors (and network faults) may.
 */
const RETRYABLE_CODES = new Set([530, 533, 534, 535, 536, 429]);

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
    this.retryable = RETRYABLE_CODES.has(errorcode);
  }

  /** Real clients detect "no such entity" from this text (cloudstack-go GetVolumeByID). */
  get notFound(): boolean {
    return this.errorcode === 431 && /entity does not exist|Unable to find volume/i.test(this.errortext);
  }
}

/** Transport trouble: no reply, reset, timeout. The call may or may not have acted. */
export class CloudStackNetworkError extends Error {
  readonly retryable = true;
  constructor(
    readonly command: string,
    cause: unknown,
  ) {
    super(`CloudStack ${command}: no usable reply (${(cause as Error)?.message ?? String(cause)})`, {
      cause,
    });
    this.name = 'CloudStackNetworkError';
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

export class CloudStackNotFoundError extends Error {
  readonly retryable = false;
  constructor(readonly volumeId: string) {
    super(`volume ${volumeId} does not exist in CloudStack`);
    this.name = 'VolumeNotFound';
  }
}

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
