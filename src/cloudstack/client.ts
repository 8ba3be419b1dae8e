import { z } from 'zod';
import {
  CloudStackConfigError,
  CloudStackConflictError,
  CloudStackError,
  CloudStackJobTimeoutError,
  CloudStackNetworkError,
  CloudStackNotFoundError,
  CloudStackVmNotFoundError,
} from './errors.js';
import { expiresIn, sign, signedQuery } from './signing.js';
import type { AsyncOptions, CloudStackApi, CsVirtualMachine, CsVolume } from './types.js';

export const cloudStackConfigSchema = z.object({
  url: z.string().refine(isHttpUrl, 'must be an http(s) URL of the API, e.g. http://mgmt:8080/client/api'),
  apiKey: z.string().min(1, 'is required'),
  secretKey: z.string().min(1, 'is required'),
  /** One HTTP request, reply included. */
  requestTimeoutMs: z.number().int().positive().default(30_000),
  /** Waiting for one async job (cloudstack-go's default is 300 s). */
  asyncTimeoutMs: z.number().int().positive().default(300_000),
  /** Job polling backoff: first wait, doubled up to the maximum. */
  pollInitialMs: z.number().int().positive().default(250),
  pollMaxMs: z.number().int().positive().default(3_000),
  /** How long `expires` (signatureversion 3) lies ahead of now. */
  signatureTtlMs: z
    .number()
    .int()
    .positive()
    .default(10 * 60_000),
  /** Send mutating commands as POST forms, as cloudstack-go does; reads stay GET. */
  postMutations: z.boolean().default(true),
});
export type CloudStackConfig = z.input<typeof cloudStackConfigSchema>;

function isHttpUrl(u: string): boolean {
  try {
    return ['http:', 'https:'].includes(new URL(u).protocol);
  } catch {
    return false;
  }
}

const MUTATING = new Set(['createVolume', 'attachVolume', 'detachVolume', 'deleteVolume']);

// Response shapes (CloudStack's VolumeResponse, UserVmResponse, job envelopes): parsed, not trusted.
const volumeSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    type: z.enum(['ROOT', 'DATADISK']),
    state: z.string(),
    size: z.number(),
    zoneid: z.string(),
    virtualmachineid: z.string().optional(),
    deviceid: z.number().optional(),
    vmname: z.string().optional(),
    vmstate: z.string().optional(),
    jobid: z.string().optional(),
    jobstatus: z.number().optional(),
  })
  .passthrough();
const vmSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    displayname: z.string().optional(),
    state: z.string(),
    zoneid: z.string(),
    hypervisor: z.string().optional(),
  })
  .passthrough();
const errorBody = z.object({
  errorcode: z.number(),
  errortext: z.string(),
  cserrorcode: z.number().optional(),
});
// §2.7: flat; jobresult absent while pending.
const jobSchema = z.object({
  jobid: z.string().optional(),
  jobstatus: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  jobresultcode: z.number().optional(),
  jobresult: z.unknown().optional(),
});
const startSchema = z.object({ jobid: z.string().min(1), id: z.string().optional() });
// Lists: `{count, <object>: [...]}`, or `{}` when empty.
const volumeList = z.object({ count: z.number().optional(), volume: z.array(volumeSchema).optional() });
const vmList = z.object({ count: z.number().optional(), virtualmachine: z.array(vmSchema).optional() });
/** States a job moves a volume through; acting on a volume in one of them would only fail. */
const TRANSITIONAL = new Set(['Attaching', 'Creating', 'Migrating']);

/**
 * A CloudStack API client that signs requests as the server verifies them (signatureversion 3
 * with expires), always asks for JSON, waits for async jobs with backoff, and is idempotent:
 * every mutating call first reads the volume and treats "already as wanted" as success, so a
 * retry after a lost reply never fails.
 */
export class CloudStackClient implements CloudStackApi {
  private readonly cfg: z.output<typeof cloudStackConfigSchema>;

  constructor(config: CloudStackConfig) {
    const r = cloudStackConfigSchema.safeParse(config);
    if (!r.success) {
      throw new CloudStackConfigError(
        r.error.issues.map((i) => ({ field: i.path.join('.') || '(config)', message: i.message })),
      );
    }
    this.cfg = r.data;
  }

  /**
   * One signed request; returns the single top-level value of the JSON body (every CloudStack
   * reply has exactly one key, `<command>response`). Non-200 → CloudStackError. Parameters go
   * as given: CloudStack's own refusals (e.g. control characters) come back as a 431 naming
   * the parameter (CloudStackError.parameter).
   */
  async call(
    command: string,
    params: Record<string, string | number | boolean | undefined> = {},
    opts: { signal?: AbortSignal } = {},
  ): Promise<Record<string, unknown>> {
    const all: Record<string, string> = {
      command,
      response: 'json',
      apiKey: this.cfg.apiKey,
      signatureversion: '3',
      expires: expiresIn(this.cfg.signatureTtlMs),
    };
    for (const [k, v] of Object.entries(params)) if (v !== undefined) all[k] = String(v);

    opts.signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(this.cfg.requestTimeoutMs);
    const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
    const post = this.cfg.postMutations && MUTATING.has(command);
    let res: Response;
    let text: string;
    try {
      res = post
        ? await fetch(this.cfg.url, {
            method: 'POST',
            // The form fields are signed like query parameters (the server merges both).
            body: new URLSearchParams({ ...all, signature: sign(all, this.cfg.secretKey) }),
            signal,
          })
        : await fetch(`${this.cfg.url}?${signedQuery(all, this.cfg.secretKey)}`, { signal });
      text = await res.text();
    } catch (err) {
      // The caller's cancellation is not a network fault: let it through as is.
      if (opts.signal?.aborted) throw opts.signal.reason;
      throw new CloudStackNetworkError(command, err);
    }
    return this.unwrap(command, res.status, text);
  }

  private unwrap(command: string, status: number, text: string): Record<string, unknown> {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new CloudStackError(
        command,
        status === 200 ? 530 : status,
        `non-JSON reply: ${text.slice(0, 200)}`,
      );
    }
    const top = z.record(z.string(), z.record(z.string(), z.unknown())).safeParse(body);
    const entries = top.success ? Object.entries(top.data) : [];
    if (entries.length !== 1)
      throw new CloudStackError(
        command,
        status === 200 ? 530 : status,
        `malformed reply: ${text.slice(0, 200)}`,
      );
    const [key, inner] = entries[0]!;
    if (status !== 200) {
      const e = errorBody.safeParse(inner);
      if (e.success)
        throw new CloudStackError(command, e.data.errorcode, e.data.errortext, e.data.cserrorcode);
      throw new CloudStackError(command, status, text.slice(0, 200));
    }
    if (key !== `${command.toLowerCase()}response`)
      throw new CloudStackError(command, 530, `reply under unexpected key ${key}`);
    return inner;
  }

  /** Parse a reply with zod; a shape mismatch is CloudStack's fault, reported as such. */
  private parse<T extends z.ZodTypeAny>(command: string, schema: T, value: unknown): z.output<T> {
    const r = schema.safeParse(value);
    if (!r.success) {
      const i = r.error.issues[0];
      throw new CloudStackError(
        command,
        530,
        `unexpected reply: ${i ? `${i.path.join('.')}: ${i.message}` : 'invalid'}`,
      );
    }
    return r.data;
  }

  /**
   * CloudStack answers an unknown `id` with a 431 ("Invalid parameter id value=…"), not an empty
   * list: that becomes CloudStackVmNotFoundError, so a wrong VM id reads as such.
   */
  async listVirtualMachines(filter: { id?: string; name?: string } = {}): Promise<CsVirtualMachine[]> {
    try {
      const r = await this.call('listVirtualMachines', { ...filter, listall: true });
      return this.parse('listVirtualMachines', vmList, r).virtualmachine ?? [];
    } catch (err) {
      if (filter.id !== undefined && isUnknown(err, 'id')) throw new CloudStackVmNotFoundError(filter.id);
      throw err;
    }
  }

  /** undefined when CloudStack does not know the VM (or lists it no more, e.g. destroyed). */
  async getVirtualMachine(id: string): Promise<CsVirtualMachine | undefined> {
    try {
      return (await this.listVirtualMachines({ id }))[0];
    } catch (err) {
      if (err instanceof CloudStackVmNotFoundError) return undefined;
      throw err;
    }
  }

  /** All pages (CloudStack's default page size is 500). */
  async listVolumes(
    filter: {
      id?: string;
      virtualmachineid?: string;
      name?: string;
      zoneid?: string;
      type?: 'ROOT' | 'DATADISK';
    } = {},
  ): Promise<CsVolume[]> {
    const out: CsVolume[] = [];
    const pagesize = 500;
    for (let page = 1; ; page++) {
      const r = await this.call('listVolumes', { ...filter, listall: true, page, pagesize });
      const parsed = this.parse('listVolumes', volumeList, r);
      const items = (parsed.volume ?? []) as CsVolume[];
      out.push(...items);
      if (items.length < pagesize || out.length >= (parsed.count ?? out.length)) return out;
    }
  }

  async getVolume(id: string, signal?: AbortSignal): Promise<CsVolume | undefined> {
    try {
      const r = await this.call('listVolumes', { id, listall: true }, { signal });
      return (this.parse('listVolumes', volumeList, r).volume?.[0] ?? undefined) as CsVolume | undefined;
    } catch (err) {
      // An unknown UUID is a synchronous 431, not an empty list.
      if (err instanceof CloudStackError && err.notFound) return undefined;
      throw err;
    }
  }

  /**
   * Validated synchronously (size in GiB, within custom.diskoffering.size.min/max, by default
   * 1–1024): a refusal is a non-retryable 431 naming the parameter. The volume exists at once in
   * state Allocated and stays so until first attached. With `resumeJobId`, the earlier
   * attempt's job is waited for instead of creating a second volume.
   */
  async createVolume(
    a: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string },
    opts: AsyncOptions = {},
  ): Promise<CsVolume> {
    let jobId = opts.resumeJobId;
    if (!jobId) {
      const r = await this.call(
        'createVolume',
        { name: a.name, size: a.sizeGb, diskofferingid: a.diskOfferingId, zoneid: a.zoneId },
        { signal: opts.signal },
      );
      jobId = this.parse('createVolume', startSchema, r).jobid;
      opts.onJobStarted?.(jobId);
    }
    return this.volumeOf('createVolume', await this.waitForJob('createVolume', jobId, opts));
  }

  /** `deviceId` 0 attaches as the VM's ROOT disk (CloudStack then requires the VM Stopped, without one). */
  async attachVolume(
    volumeId: string,
    vmId: string,
    opts: AsyncOptions & { deviceId?: number } = {},
  ): Promise<CsVolume> {
    await this.resume('attachVolume', opts);
    const v = await this.settled('attachVolume', volumeId, opts);
    if (v.virtualmachineid === vmId && (opts.deviceId === undefined || v.deviceid === opts.deviceId))
      return v;
    if (v.virtualmachineid) throw new CloudStackConflictError(volumeId, v.virtualmachineid, vmId);
    const args: Record<string, string | number> = { id: volumeId, virtualmachineid: vmId };
    if (opts.deviceId !== undefined) args.deviceid = opts.deviceId;
    let r: Record<string, unknown>;
    try {
      r = await this.call('attachVolume', args, { signal: opts.signal });
    } catch (err) {
      if (isUnknown(err, 'virtualmachineid')) throw new CloudStackVmNotFoundError(vmId);
      throw err;
    }
    const jobId = this.parse('attachVolume', startSchema, r).jobid;
    opts.onJobStarted?.(jobId);
    try {
      return this.volumeOf('attachVolume', await this.waitForJob('attachVolume', jobId, opts));
    } catch (err) {
      // An earlier attempt whose reply was lost may have been queued before this one and won:
      // our job then fails with "not attached to any VM", yet the volume is where we want it.
      const now = err instanceof CloudStackError && err.inJob ? await this.getVolume(volumeId) : undefined;
      if (now?.virtualmachineid === vmId) return now;
      throw err;
    }
  }

  async detachVolume(volumeId: string, opts: AsyncOptions & { fromVmId?: string } = {}): Promise<CsVolume> {
    await this.resume('detachVolume', opts);
    const v = await this.settled('detachVolume', volumeId, opts);
    if (!v.virtualmachineid) return v;
    if (opts.fromVmId && v.virtualmachineid !== opts.fromVmId) {
      throw new CloudStackConflictError(volumeId, v.virtualmachineid, opts.fromVmId);
    }
    const r = await this.call('detachVolume', { id: volumeId }, { signal: opts.signal });
    const jobId = this.parse('detachVolume', startSchema, r).jobid;
    opts.onJobStarted?.(jobId);
    try {
      return this.volumeOf('detachVolume', await this.waitForJob('detachVolume', jobId, opts));
    } catch (err) {
      const now = err instanceof CloudStackError && err.inJob ? await this.getVolume(volumeId) : undefined;
      if (now && !now.virtualmachineid) return now;
      throw err;
    }
  }

  /** Synchronous in CloudStack; attached → 431, not retryable. */
  async deleteVolume(volumeId: string): Promise<void> {
    if (!(await this.getVolume(volumeId))) return;
    try {
      await this.call('deleteVolume', { id: volumeId });
    } catch (err) {
      // Deleted by our own earlier attempt whose reply was lost: CloudStack now answers 431.
      if (err instanceof CloudStackError && err.notFound) return;
      throw err;
    }
  }

  /** Poll a job with backoff until it succeeds (its jobresult) or fails (CloudStackError). */
  async waitForJob(command: string, jobId: string, opts: AsyncOptions = {}): Promise<unknown> {
    return this.pollJob(command, jobId, opts, this.cfg.asyncTimeoutMs);
  }

  private async pollJob(
    command: string,
    jobId: string,
    opts: AsyncOptions,
    timeoutMs: number,
  ): Promise<unknown> {
    const started = Date.now();
    let delay = this.cfg.pollInitialMs;
    for (;;) {
      const r = await this.call('queryAsyncJobResult', { jobid: jobId }, { signal: opts.signal });
      const job = this.parse('queryAsyncJobResult', jobSchema, r);
      if (job.jobstatus === 1) return job.jobresult;
      if (job.jobstatus === 2) {
        const e = errorBody.partial().safeParse(job.jobresult ?? {});
        const code = (e.success ? e.data.errorcode : undefined) ?? job.jobresultcode ?? 530;
        const text = (e.success ? e.data.errortext : undefined) ?? 'job failed';
        throw new CloudStackError(command, code, text, undefined, true);
      }
      opts.onPoll?.(jobId);
      const waited = Date.now() - started;
      if (waited >= timeoutMs) throw new CloudStackJobTimeoutError(command, jobId, waited);
      await sleep(Math.min(delay, timeoutMs - waited), opts.signal);
      delay = Math.min(delay * 2, this.cfg.pollMaxMs);
    }
  }

  /**
   * A retried activity first lets the job of its earlier attempt finish, so it does not race
   * it with a second one; whatever that job's outcome, the look-up that follows decides.
   */
  private async resume(command: string, opts: AsyncOptions): Promise<void> {
    if (!opts.resumeJobId) return;
    try {
      await this.waitForJob(command, opts.resumeJobId, opts);
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (err instanceof CloudStackJobTimeoutError) throw err;
    }
  }

  /**
   * The volume, once no job of someone else's (or of our own lost attempt) is moving it.
   * CloudStack lists a volume's running job as `jobid` (jobstatus 0) — a detach leaves the state
   * Ready, a queued attach has not reached Attaching yet — so that job is waited for (through
   * queryAsyncJobResult, reporting each poll) instead of being raced by a second call whose job
   * would fail. A transitional state with no job shown is polled. Only the wait for a job is
   * bounded by asyncTimeoutMs as an error (retryable); a stuck state is acted on after it.
   */
  private async settled(command: string, volumeId: string, opts: AsyncOptions): Promise<CsVolume> {
    const started = Date.now();
    for (let delay = this.cfg.pollInitialMs; ; delay = Math.min(delay * 2, this.cfg.pollMaxMs)) {
      const v = await this.getVolume(volumeId, opts.signal);
      if (!v) throw new CloudStackNotFoundError(volumeId);
      const waited = Date.now() - started;
      if (v.jobid) {
        if (waited >= this.cfg.asyncTimeoutMs) throw new CloudStackJobTimeoutError(command, v.jobid, waited);
        if (await this.outlast(command, v.jobid, opts, this.cfg.asyncTimeoutMs - waited)) continue;
        opts.onPoll?.(v.jobid);
      } else if (!TRANSITIONAL.has(v.state) || waited > this.cfg.asyncTimeoutMs) {
        return v;
      }
      await sleep(delay, opts.signal);
    }
  }

  /**
   * Wait for a job found on the volume to end, whatever its outcome (the look-up after it
   * decides). False when CloudStack will not tell us about it (e.g. another account's job):
   * the caller then polls the volume instead.
   */
  private async outlast(
    command: string,
    jobId: string,
    opts: AsyncOptions,
    timeoutMs: number,
  ): Promise<boolean> {
    try {
      await this.pollJob(command, jobId, { signal: opts.signal, onPoll: opts.onPoll }, timeoutMs);
      return true;
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (err instanceof CloudStackError) return err.inJob;
      throw err; // network trouble or the wait timed out: retryable as they are
    }
  }

  private volumeOf(command: string, jobresult: unknown): CsVolume {
    return this.parse(command, z.object({ volume: volumeSchema }), jobresult).volume as CsVolume;
  }
}

/** CloudStack's 431 for a UUID it does not know, in the given parameter. */
function isUnknown(err: unknown, parameter: string): boolean {
  return err instanceof CloudStackError && err.notFound && err.parameter === parameter;
}

/** setTimeout that a cancellation ends early (with the signal's reason). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
