import { z } from 'zod';
import {
  CloudStackConflictError,
  CloudStackError,
  CloudStackJobTimeoutError,
  CloudStackNetworkError,
  CloudStackNotFoundError,
} from './errors.js';
import { expiresIn, signedQuery } from './signing.js';
import type { AsyncOptions, CloudStackApi, CsVirtualMachine, CsVolume } from './types.js';

export const cloudStackConfigSchema = z.object({
  url: z.string().url('must be the API endpoint, e.g. http://mgmt:8080/client/api'),
  apiKey: z.string().min(1, 'is required'),
  secretKey: z.string().min(1, 'is required'),
  requestTimeoutMs: z.number().int().positive().default(30_000),
  asyncTimeoutMs: z.number().int().positive().default(300_000),
  pollInitialMs: z.number().int().positive().default(250),
  pollMaxMs: z.number().int().positive().default(3_000),
});
export type CloudStackConfig = z.input<typeof cloudStackConfigSchema>;

// Response shapes (shared/reference/cloudstack.md §2): parsed, not trusted.
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
  })
  .passthrough();
const vmSchema = z
  .object({ id: z.string(), name: z.string(), state: z.string(), zoneid: z.string() })
  .passthrough();
const errorBody = z.object({
  errorcode: z.number(),
  errortext: z.string(),
  cserrorcode: z.number().optional(),
});
const jobSchema = z.object({
  jobid: z.string().optional(),
  jobstatus: z.number(),
  jobresultcode: z.number().optional(),
  jobresult: z.unknown().optional(),
});

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
      const i = r.error.issues[0]!;
      throw new Error(`CloudStack config: ${i.path.join('.')}: ${i.message}`);
    }
    this.cfg = r.data;
  }

  /** One signed GET; returns the single top-level value of the JSON body. */
  async call(
    command: string,
    params: Record<string, string | number | undefined> = {},
  ): Promise<Record<string, unknown>> {
    const all: Record<string, string> = {
      command,
      response: 'json',
      apiKey: this.cfg.apiKey,
      signatureversion: '3',
      expires: expiresIn(10 * 60_000),
    };
    for (const [k, v] of Object.entries(params)) if (v !== undefined) all[k] = String(v);
    const url = `${this.cfg.url}?${signedQuery(all, this.cfg.secretKey)}`;
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.cfg.requestTimeoutMs) });
      text = await res.text();
    } catch (err) {
      throw new CloudStackNetworkError(command, err);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new CloudStackError(command, res.status || 530, `non-JSON reply: ${text.slice(0, 200)}`);
    }
    const values = Object.values(body as Record<string, unknown>);
    const inner = (values.length === 1 ? values[0] : {}) as Record<string, unknown>;
    if (res.status !== 200) {
      const e = errorBody.safeParse(inner);
      if (e.success)
        throw new CloudStackError(command, e.data.errorcode, e.data.errortext, e.data.cserrorcode);
      throw new CloudStackError(command, res.status, text.slice(0, 200));
    }
    return inner;
  }

  async listVirtualMachines(filter: { id?: string; name?: string } = {}): Promise<CsVirtualMachine[]> {
    const r = await this.call('listVirtualMachines', { ...filter, listall: 'true' });
    return z.array(vmSchema).parse(r.virtualmachine ?? []) as CsVirtualMachine[];
  }

  /** All pages (CloudStack's default page size is 500). */
  async listVolumes(filter: { id?: string; virtualmachineid?: string } = {}): Promise<CsVolume[]> {
    const out: CsVolume[] = [];
    const pagesize = 500;
    for (let page = 1; ; page++) {
      const r = await this.call('listVolumes', { ...filter, listall: 'true', page, pagesize });
      const items = z.array(volumeSchema).parse(r.volume ?? []) as CsVolume[];
      out.push(...items);
      const count = typeof r.count === 'number' ? r.count : out.length;
      if (items.length < pagesize || out.length >= count) return out;
    }
  }

  async getVolume(id: string): Promise<CsVolume | undefined> {
    try {
      return (await this.listVolumes({ id }))[0];
    } catch (err) {
      if (err instanceof CloudStackError && err.notFound) return undefined;
      throw err;
    }
  }

  async createVolume(
    a: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string },
    opts: AsyncOptions = {},
  ): Promise<CsVolume> {
    const r = await this.call('createVolume', {
      name: a.name,
      size: a.sizeGb,
      diskofferingid: a.diskOfferingId,
      zoneid: a.zoneId,
    });
    const jobId = z.string().parse(r.jobid);
    opts.onJobStarted?.(jobId);
    return this.volumeOf('createVolume', await this.waitForJob('createVolume', jobId, opts));
  }

  async attachVolume(volumeId: string, vmId: string, opts: AsyncOptions = {}): Promise<CsVolume> {
    if (opts.resumeJobId)
      await this.waitForJob('attachVolume', opts.resumeJobId, opts).catch(() => undefined);
    const v = await this.settled(volumeId, opts.signal);
    if (v.virtualmachineid === vmId) return v;
    if (v.virtualmachineid) throw new CloudStackConflictError(volumeId, v.virtualmachineid, vmId);
    const r = await this.call('attachVolume', { id: volumeId, virtualmachineid: vmId });
    const jobId = z.string().parse(r.jobid);
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
    if (opts.resumeJobId)
      await this.waitForJob('detachVolume', opts.resumeJobId, opts).catch(() => undefined);
    const v = await this.settled(volumeId, opts.signal);
    if (!v.virtualmachineid) return v;
    if (opts.fromVmId && v.virtualmachineid !== opts.fromVmId) {
      throw new CloudStackConflictError(volumeId, v.virtualmachineid, opts.fromVmId);
    }
    const r = await this.call('detachVolume', { id: volumeId });
    const jobId = z.string().parse(r.jobid);
    opts.onJobStarted?.(jobId);
    try {
      return this.volumeOf('detachVolume', await this.waitForJob('detachVolume', jobId, opts));
    } catch (err) {
      const now = err instanceof CloudStackError && err.inJob ? await this.getVolume(volumeId) : undefined;
      if (now && !now.virtualmachineid) return now;
      throw err;
    }
  }

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
    const started = Date.now();
    let delay = this.cfg.pollInitialMs;
    for (;;) {
      const job = jobSchema.parse(await this.call('queryAsyncJobResult', { jobid: jobId }));
      if (job.jobstatus === 1) return job.jobresult;
      if (job.jobstatus === 2) {
        const e = errorBody.partial().parse(job.jobresult ?? {});
        throw new CloudStackError(
          command,
          e.errorcode ?? job.jobresultcode ?? 530,
          e.errortext ?? 'job failed',
          undefined,
          true,
        );
      }
      opts.onPoll?.(jobId);
      if (Date.now() - started > this.cfg.asyncTimeoutMs)
        throw new CloudStackJobTimeoutError(command, jobId, Date.now() - started);
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, this.cfg.pollMaxMs);
    }
  }

  /**
   * The volume, once no job of someone else's (or of our own lost attempt) is moving it: a
   * volume in Attaching/Creating is waited for rather than acted on.
   */
  private async settled(volumeId: string, signal?: AbortSignal): Promise<CsVolume> {
    const started = Date.now();
    for (let delay = this.cfg.pollInitialMs; ; delay = Math.min(delay * 2, this.cfg.pollMaxMs)) {
      const v = await this.getVolume(volumeId);
      if (!v) throw new CloudStackNotFoundError(volumeId);
      if (!['Attaching', 'Creating', 'Migrating'].includes(v.state)) return v;
      if (Date.now() - started > this.cfg.asyncTimeoutMs) return v;
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private volumeOf(command: string, jobresult: unknown): CsVolume {
    const r = z.object({ volume: volumeSchema }).safeParse(jobresult);
    if (!r.success)
      throw new CloudStackError(
        command,
        530,
        `unexpected job result: ${JSON.stringify(jobresult).slice(0, 200)}`,
      );
    return r.data.volume as CsVolume;
  }
}
