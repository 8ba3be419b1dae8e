import type { FailureType } from '../domain/failures.js';
/**
 * CloudStack failures, typed and classified. `retryable` drives the sagas' retry policies
 * (activities/failures.ts turns `retryable: false` into a non-retryable failure): parameter,
 * permission, unsupported and account-limit errors will not change on retry; internal, capacity,
 * unavailable, allocation and in-use errors (and network faults) may.
 * The codes are CloudStack's ApiErrorCode values, which are also the HTTP status of the reply.
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

/** The text CloudStack gives for an unknown UUID (ParamProcessWorker) or a deleted volume. */
const NOT_FOUND_TEXT = /entity does not exist|Unable to find volume/i;

/**
 * The request parameter a CloudStack error text blames, for the texts its parameter checks
 * produce: a missing or unknown/ill-typed value (ParamProcessWorker), control characters
 * (ApiServer.checkCharacterInkParams), and createVolume's size checks (VolumeApiServiceImpl),
 * which do not name the parameter themselves.
 */
const PARAMETER_TEXTS: [RegExp, string?][] = [
  [/due to missing parameter (\S+)$/],
  [/Invalid parameter (\S+) value=/],
  [/due to invalid value .* for parameter (\S+)$/s],
  [/illegal ASCII non-printable characters for parameter (\S+)$/],
  // Older releases: "Received value <v> for parameter <p> is invalid, contains illegal …".
  [/for parameter (\S+) is invalid, contains illegal ASCII non-printable characters$/s],
  [/^Volume size: .* is out of allowed range/, 'size'],
  [/^Disk size must be larger than 0/, 'size'],
  [/^This disk offering requires a custom size/, 'size'],
  [/^Please specify a size of at least 1 GB/, 'size'],
];

export function parameterOf(errortext: string): string | undefined {
  for (const [re, fixed] of PARAMETER_TEXTS) {
    const m = re.exec(errortext);
    if (m) return fixed ?? m[1];
  }
  return undefined;
}

export class CloudStackError extends Error {
  readonly retryable: boolean;
  /** The request parameter CloudStack refused, when its text says (see parameterOf). */
  readonly parameter: string | undefined;
  constructor(
    readonly command: string,
    readonly errorcode: number,
    readonly errortext: string,
    readonly cserrorcode?: number,
    /** True when the failure came from an async job (jobstatus 2), not the HTTP call. */
    readonly inJob = false,
  ) {
    const parameter = errorcode === 431 ? parameterOf(errortext) : undefined;
    super(
      `CloudStack ${command} failed${inJob ? ' in its job' : ''}: ${errorcode}${cserrorcode ? `/${cserrorcode}` : ''} ${errortext}${parameter ? ` (parameter ${parameter})` : ''}`,
    );
    this.name = 'CloudStackError';
    this.retryable = isRetryableCode(errorcode);
    this.parameter = parameter;
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
    this.name = 'VolumeNotFound' satisfies FailureType;
  }
}

/**
 * The VM id is unknown to CloudStack (its 431 for the id): a wrong id, e.g. APPLIANCE_VM_ID, not
 * a passing fault.
 */
export class CloudStackVmNotFoundError extends Error {
  readonly retryable = false;
  constructor(readonly vmId: string) {
    super(`virtual machine ${vmId} does not exist in CloudStack`);
    this.name = 'VirtualMachineNotFound';
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
