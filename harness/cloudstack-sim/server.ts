import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { sign } from '../../src/cloudstack/signing.js';
import { parseExpires } from './expires.js';
import { FaultInjector, type Fault } from './faults.js';
import { InMemoryHypervisor, type HypervisorBackend } from './hypervisor.js';
import { csDate, SimState, type SimJob, type SimVolume } from './state.js';

/**
 * A CloudStack management-server simulator for the API we use, faithful where clients can tell:
 * signature verification (ApiServer.verifyRequest), envelopes with one top-level key, HTTP
 * status = errorcode, async jobs polled through queryAsyncJobResult, validation done in the
 * job where CloudStack does it there, device ids 1,2,4,…, states Allocated/Ready/Attaching, and
 * the pending job shown on the volume it works on. Texts and codes are CloudStack's own (the
 * Java class that produces each is named in the comments; § numbers refer to the API areas:
 * §1 signing, §2 commands and envelopes, §3 volume behaviour).
 */
export interface SimulatorOptions {
  host?: string;
  port?: number;
  apiKey?: string;
  secretKey?: string;
  /** How long an async job stays pending (jobstatus 0) before it runs. */
  jobDurationMs?: number;
  /** Hypervisor backend per VM id (the appliance in the lab), else `hypervisor`. */
  hypervisorFor?: (vmId: string) => HypervisorBackend | undefined;
  hypervisor?: HypervisorBackend;
  /** Serve /sim/* test endpoints (fault injection, state). Off unless asked for. */
  testEndpoints?: boolean;
}

/**
 * Test seam: runs for every authenticated API request just before the command is handled, so
 * a test can put something between a client's look-up and its action (e.g. another party's
 * attach queued first) without timing tricks.
 */
export type BeforeCommand = (
  command: string,
  params: Readonly<Record<string, string>>,
) => Promise<void> | void;

type Params = Record<string, string>;
class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly text: string,
    readonly cserrorcode?: number,
  ) {
    super(text);
  }
}

const MISSING = (cmd: string, p: string) =>
  new ApiError(431, `Unable to execute API command ${cmd.toLowerCase()} due to missing parameter ${p}`, 9999);
const INVALID_ID = (cmd: string, p: string, v: string) =>
  new ApiError(
    431,
    `Unable to execute API command ${cmd.toLowerCase()} due to invalid value. Invalid parameter ${p} value=${v} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`,
    9999,
  );
const AUTH_TEXT = 'unable to verify user credentials and/or request signature';
/**
 * ApiServer.checkCharacterInkParams, run on every parameter before the command: ASCII 0–31 and
 * 127 except LF and CR (tab is refused), answered as a parameter error (431).
 */
function hasControlCharacter(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if ((c < 0x20 && c !== 0x0a && c !== 0x0d) || c === 0x7f) return true;
  }
  return false;
}
const CONTROL_TEXT = (p: string) =>
  `Received value containing illegal ASCII non-printable characters for parameter ${p}`;
const KNOWN = [
  'listVirtualMachines',
  'listVolumes',
  'listZones',
  'createVolume',
  'attachVolume',
  'detachVolume',
  'deleteVolume',
  'queryAsyncJobResult',
];

export class CloudStackSimulator {
  readonly state = new SimState();
  readonly faults = new FaultInjector();
  readonly apiKey: string;
  readonly secretKey: string;
  jobDurationMs: number;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly defaultHypervisor: HypervisorBackend;
  private readonly perVm = new Map<string, HypervisorBackend>();
  /** Every API request seen (command, HTTP method, signature valid), for tests. */
  readonly requests: { command: string; method: string; ok: boolean }[] = [];
  /** See BeforeCommand. */
  beforeCommand: BeforeCommand | undefined;

  constructor(private readonly opts: SimulatorOptions = {}) {
    this.apiKey = opts.apiKey ?? `sim-key-${randomUUID()}`;
    this.secretKey = opts.secretKey ?? `sim-secret-${randomUUID()}`;
    this.jobDurationMs = opts.jobDurationMs ?? 50;
    this.defaultHypervisor = opts.hypervisor ?? new InMemoryHypervisor();
  }

  get url(): string {
    const a = this.server?.address() as AddressInfo | undefined;
    if (!a) throw new Error('simulator not started');
    return `http://${a.address}:${a.port}/client/api`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => (this.sockets.add(s), s.on('close', () => this.sockets.delete(s))));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', resolve);
    });
    return this;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Route one VM's disks to its own backend (e.g. the appliance to QMP, targets to files). */
  setHypervisor(vmId: string, backend: HypervisorBackend | undefined): void {
    if (backend) this.perVm.set(vmId, backend);
    else this.perVm.delete(vmId);
  }

  /** The backend that plugs disks into this VM: per-VM, then `hypervisorFor`, then the default. */
  backendFor(vmId: string): HypervisorBackend {
    return this.perVm.get(vmId) ?? this.opts.hypervisorFor?.(vmId) ?? this.defaultHypervisor;
  }

  // --- HTTP --------------------------------------------------------------------------------
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://sim');
      const body = await readBody(req);
      if (url.pathname.startsWith('/sim/')) return this.testEndpoint(url, req.method ?? 'GET', body, res);
      if (url.pathname !== '/client/api')
        return send(res, 404, { errorresponse: { errorcode: 404, errortext: 'not found' } });
      // GET query and POST form merged; first value wins (ApiServlet).
      const params: Params = {};
      const add = (sp: URLSearchParams) => sp.forEach((v, k) => (k in params ? undefined : (params[k] = v)));
      add(url.searchParams);
      if ((req.headers['content-type'] ?? '').includes('application/x-www-form-urlencoded'))
        add(new URLSearchParams(body));
      await this.api(params, req.method ?? 'GET', res);
    } catch (err) {
      send(res, 530, {
        errorresponse: { uuidList: [], errorcode: 530, cserrorcode: 4250, errortext: String(err) },
      });
    }
  }

  private async api(params: Params, method: string, res: ServerResponse): Promise<void> {
    const command = params.command ?? '';
    const key = KNOWN.includes(command) ? `${command.toLowerCase()}response` : 'errorresponse';
    if (params.response !== 'json') {
      // The real server answers XML by default; this simulator speaks JSON only and says so.
      res.writeHead(432, { 'content-type': 'text/xml; charset=UTF-8' });
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><${key}><errorcode>432</errorcode><errortext>this simulator answers response=json only</errortext></${key}>`,
      );
      return;
    }
    const authOk = this.verify(params) && KNOWN.includes(command);
    this.requests.push({ command, method, ok: authOk });
    if (!authOk) return send(res, 401, { [key]: { uuidList: [], errorcode: 401, errortext: AUTH_TEXT } });
    // After the signature, before the command (ApiServer.handleRequest); cserrorcode 9999 as for
    // every error raised while processing parameters.
    const bad = Object.keys(params).find((k) => hasControlCharacter(params[k]!));
    if (bad !== undefined) {
      return send(res, 431, {
        [key]: { uuidList: [], errorcode: 431, cserrorcode: 9999, errortext: CONTROL_TEXT(bad) },
      });
    }
    await this.beforeCommand?.(command, params);

    const fault = this.faults.take(command);
    if (fault?.kind === 'timeout') return; // never answer; the socket closes with the server
    if (fault?.kind === 'error') {
      return send(res, fault.errorcode, {
        [key]: { uuidList: [], errorcode: fault.errorcode, cserrorcode: 9999, errortext: fault.errortext },
      });
    }
    try {
      const out = await this.dispatch(command, params, fault);
      if (fault?.kind === 'lost-reply') {
        res.socket?.destroy();
        return;
      }
      send(res, 200, { [key]: out });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (fault?.kind === 'lost-reply') return void res.socket?.destroy();
      send(res, err.code, {
        [key]: {
          uuidList: [],
          errorcode: err.code,
          ...(err.cserrorcode ? { cserrorcode: err.cserrorcode } : {}),
          errortext: err.text,
        },
      });
    }
  }

  /** ApiServer.verifyRequest (§1.1). */
  private verify(p: Params): boolean {
    const lower = Object.fromEntries(Object.entries(p).map(([k, v]) => [k.toLowerCase(), v]));
    if (!lower.apikey || !lower.signature || lower.apikey !== this.apiKey) return false;
    if (lower.signatureversion === '3') {
      // Required, parsable (DateUtil.parseTZDateString) and not in the past.
      const t = parseExpires(lower.expires ?? '');
      if (t === undefined || t < Date.now()) return false;
    }
    const expected = Buffer.from(sign(p, this.secretKey));
    const got = Buffer.from(lower.signature);
    return expected.length === got.length && timingSafeEqual(expected, got);
  }

  // --- commands ------------------------------------------------------------------------------
  private async dispatch(cmd: string, p: Params, fault?: Fault): Promise<Record<string, unknown>> {
    const s = this.state;
    switch (cmd) {
      case 'listZones': {
        // Like every UUID parameter, an unknown id is a 431, not an empty list (§2.5).
        if (p.id && !s.zones.has(p.id)) throw INVALID_ID(cmd, 'id', p.id);
        let zones = [...s.zones.values()];
        if (p.id) zones = zones.filter((z) => z.id === p.id);
        if (p.name) zones = zones.filter((z) => z.name === p.name);
        return zones.length ? { count: zones.length, zone: zones } : {};
      }
      case 'listVirtualMachines': {
        if (p.id && !s.vms.has(p.id)) throw INVALID_ID(cmd, 'id', p.id);
        let vms = [...s.vms.values()].filter((v) => v.state !== 'Destroyed');
        if (p.id) vms = vms.filter((v) => v.id === p.id);
        if (p.name) vms = vms.filter((v) => v.name === p.name);
        return vms.length ? { count: vms.length, virtualmachine: vms.map((v) => s.vmJson(v)) } : {};
      }
      case 'listVolumes': {
        if (p.id && !s.volumes.has(p.id)) throw INVALID_ID(cmd, 'id', p.id);
        if (p.virtualmachineid && !s.vms.has(p.virtualmachineid))
          throw INVALID_ID(cmd, 'virtualmachineid', p.virtualmachineid);
        if (p.zoneid && !s.zones.has(p.zoneid)) throw INVALID_ID(cmd, 'zoneid', p.zoneid);
        let vols = s.liveVolumes();
        if (p.id) vols = vols.filter((v) => v.id === p.id);
        if (p.virtualmachineid) vols = vols.filter((v) => v.vmId === p.virtualmachineid);
        if (p.name) vols = vols.filter((v) => v.name === p.name);
        if (p.zoneid) vols = vols.filter((v) => v.zoneid === p.zoneid);
        if (p.type) vols = vols.filter((v) => v.type === p.type!.toUpperCase());
        const count = vols.length;
        const pagesize = Number(p.pagesize ?? 500);
        const page = Number(p.page ?? 1);
        const slice = vols.slice((page - 1) * pagesize, page * pagesize);
        if (count === 0) return {};
        return slice.length ? { count, volume: slice.map((v) => s.volumeJson(v)) } : { count };
      }
      case 'createVolume': {
        // §2.3: validated synchronously; the row exists at once in state Allocated.
        // Parameter processing first (ParamProcessWorker: `size` is a Java long, ids UUIDs) …
        if (p.size !== undefined && !/^[+-]?\d{1,18}$/.test(p.size))
          throw new ApiError(
            431,
            `Unable to execute API command createvolume due to invalid value ${p.size} for parameter size`,
            9999,
          );
        if (p.diskofferingid && !s.diskOfferings.has(p.diskofferingid))
          throw INVALID_ID(cmd, 'diskofferingid', p.diskofferingid);
        if (p.zoneid && !s.zones.has(p.zoneid)) throw INVALID_ID(cmd, 'zoneid', p.zoneid);
        // … then VolumeApiServiceImpl.allocVolume, in its order (InvalidParameterValueException: 4350).
        if (!p.diskofferingid && !p.snapshotid) {
          throw new ApiError(
            431,
            'At least one of disk Offering ID or snapshot ID must be passed whilst creating volume',
            4350,
          );
        }
        const gb = p.size === undefined ? undefined : Number(p.size);
        if (gb !== undefined && gb <= 0) throw new ApiError(431, 'Disk size must be larger than 0', 4350);
        if (gb === undefined)
          throw new ApiError(431, 'This disk offering requires a custom size specified', 4350);
        // validateCustomDiskOfferingSizeRange: custom.diskoffering.size.min/max (1 and 1024 GB).
        const { customDiskMinGb: min, customDiskMaxGb: max } = s;
        if (gb < min || gb > max) {
          throw new ApiError(
            431,
            `Volume size: ${gb} GB is out of allowed range. Min: ${min}. Max: ${max}`,
            4350,
          );
        }
        if (!p.zoneid) throw MISSING(cmd, 'zoneid');
        const v = s.addVolume({
          name: p.name || randomUUID(),
          size: gb * 2 ** 30,
          zoneid: p.zoneid,
          diskofferingid: p.diskofferingid,
        });
        const job = this.job(cmd, v.id, fault, async () => ({ volume: s.volumeJson(v) }));
        return { id: v.id, jobid: job.id };
      }
      case 'attachVolume': {
        if (!p.id) throw MISSING(cmd, 'id');
        if (!p.virtualmachineid) throw MISSING(cmd, 'virtualmachineid');
        const v = this.volume(cmd, p.id);
        const vm = s.vms.get(p.virtualmachineid);
        if (!vm) throw INVALID_ID(cmd, 'virtualmachineid', p.virtualmachineid);
        const job = this.job(cmd, v.id, fault, async () => {
          // VolumeApiServiceImpl.attachVolumeToVM checks, in order (§3); all fail the job with 431.
          if (v.vmId) throw new ApiError(431, 'Please specify a volume that is not attached to any VM.');
          if (v.removed) throw new ApiError(431, 'Please specify a volume that is not destroyed.');
          if (!['Allocated', 'Ready', 'Uploaded'].includes(v.state))
            throw new ApiError(431, 'Volume state must be in Allocated, Ready or in Uploaded state');
          if (vm.state !== 'Running' && vm.state !== 'Stopped')
            throw new ApiError(431, 'Please specify a VM that is either running or stopped.');
          if (vm.zoneid !== v.zoneid)
            throw new ApiError(431, 'Please specify a VM that is in the same zone as the volume.');
          // deviceid 0: the ROOT rules (validateRootVolumeDetachAttach: on KVM only a Stopped VM,
          // with the same text as for a detach; one root per VM).
          const asRoot = p.deviceid !== undefined && Number(p.deviceid) === 0;
          if (asRoot) {
            if (vm.state !== 'Stopped')
              throw new ApiError(
                431,
                'Root volume detach can happen only when vm is in states: Stopped or Destroyed',
              );
            if (s.liveVolumes().some((x) => x.vmId === vm.id && x.deviceId === 0))
              throw new ApiError(431, 'Vm already has root volume attached to it');
          }
          if (!asRoot && s.dataDiskCount(vm.id) >= s.maxDataVolumes) {
            throw new ApiError(
              431,
              `The specified VM already has the maximum number of data disks (${s.maxDataVolumes}) attached. Please specify another VM.`,
            );
          }
          const deviceId = this.deviceIdFor(vm.id, vm.internalId, p.deviceid);
          const wasState = v.state;
          v.state = wasState === 'Allocated' ? 'Creating' : 'Attaching';
          try {
            if (vm.state === 'Running') {
              await this.backendFor(vm.id).attach({
                volumeId: v.id,
                vmId: vm.id,
                serial: s.serialOf(v.id),
                deviceId,
                sizeBytes: v.size,
              });
            }
          } catch (err) {
            v.state = wasState === 'Allocated' ? 'Allocated' : 'Ready';
            throw new ApiError(
              530,
              `Failed to attach volume ${v.name} to VM ${vm.name}; ${(err as Error).message}`,
            );
          }
          // Attached at device 0 a volume becomes the VM's ROOT (VolumeDaoImpl.attachVolume), and a
          // DATADISK again when detached.
          Object.assign(v, { vmId: vm.id, deviceId, attached: csDate(), state: 'Ready' });
          if (deviceId === 0) v.type = 'ROOT';
          return { volume: s.volumeJson(v) };
        });
        return { jobid: job.id };
      }
      case 'detachVolume': {
        const byId = !!p.id;
        const byPair = !!p.virtualmachineid && p.deviceid !== undefined;
        let v: SimVolume | undefined;
        if (byId) v = this.volume(cmd, p.id!);
        else if (byPair)
          v = s.liveVolumes().find((x) => x.vmId === p.virtualmachineid && String(x.deviceId) === p.deviceid);
        const job = this.job(cmd, v?.id, fault, async () => {
          if (byId === byPair)
            throw new ApiError(431, 'Please provide either a volume id, or a tuple(device id, instance id)');
          if (!v || !v.vmId) throw new ApiError(431, 'The specified volume is not attached to a VM.');
          const vm = s.vms.get(v.vmId)!;
          if (v.type === 'ROOT' && vm.state !== 'Stopped') {
            throw new ApiError(
              431,
              'Root volume detach can happen only when vm is in states: Stopped or Destroyed',
            );
          }
          if (vm.state === 'Running') {
            try {
              await this.backendFor(vm.id).detach({ volumeId: v.id, vmId: vm.id });
            } catch (err) {
              throw new ApiError(
                530,
                `Failed to detach volume ${v.name} from VM ${vm.name}; ${(err as Error).message}`,
              );
            }
          }
          delete v.vmId;
          delete v.deviceId;
          delete v.attached;
          if (v.type === 'ROOT') v.type = 'DATADISK';
          return { volume: s.volumeJson(v) };
        });
        return { jobid: job.id };
      }
      case 'deleteVolume': {
        // §2.4: synchronous.
        if (!p.id) throw MISSING(cmd, 'id');
        const v = s.volumes.get(p.id);
        if (!v) throw INVALID_ID(cmd, 'id', p.id);
        if (v.removed) throw new ApiError(431, `Unable to find volume with ID: ${v.internalId}`, 4350);
        if (v.vmId) throw new ApiError(431, 'Please specify a volume that is not attached to any VM.', 4350);
        v.removed = true;
        v.state = 'Expunged';
        return { success: true };
      }
      case 'queryAsyncJobResult': {
        if (!p.jobid) throw MISSING(cmd, 'jobid');
        const j = s.jobs.get(p.jobid);
        if (!j) throw INVALID_ID(cmd, 'jobid', p.jobid);
        return jobJson(j);
      }
    }
    throw new ApiError(432, `unsupported command ${cmd}`);
  }

  /** VolumeApiServiceImpl.getDeviceId (§3): RuntimeExceptions, so the job fails with 530. */
  private deviceIdFor(vmId: string, vmInternalId: number, requested: string | undefined): number {
    const s = this.state;
    if (requested === undefined) {
      const free = s.freeDeviceId(vmId);
      if (free === undefined) throw new ApiError(530, `All device Ids are used by vm ${vmInternalId}`);
      return free;
    }
    const n = Number(requested);
    if (!Number.isInteger(n) || n < 0 || n === 3 || n > s.maxDataVolumes + 1)
      throw new ApiError(530, `deviceId should be 0,1,2,4-${s.maxDataVolumes + 1}`);
    if (s.liveVolumes().some((v) => v.vmId === vmId && v.deviceId === n))
      throw new ApiError(530, `deviceId ${n} is used by vm ${vmInternalId}`);
    return n;
  }

  private volume(cmd: string, id: string): SimVolume {
    const v = this.state.volumes.get(id);
    if (!v || v.removed) throw INVALID_ID(cmd, 'id', id);
    return v;
  }

  /** Start an async job: pending for jobDurationMs, then `work` decides success or failure. */
  private job(
    cmd: string,
    instanceId: string | undefined,
    fault: Fault | undefined,
    work: () => Promise<unknown>,
  ): SimJob {
    const j: SimJob = { id: randomUUID(), cmd, status: 0, resultCode: 0, instanceId, created: csDate() };
    this.state.jobs.set(j.id, j);
    const t = setTimeout(() => {
      this.timers.delete(t);
      const run =
        fault?.kind === 'job-error' ? Promise.reject(new ApiError(fault.errorcode, fault.errortext)) : work();
      run.then(
        (result) => Object.assign(j, { status: 1, result, completed: csDate() }),
        (err: unknown) => {
          const e = err instanceof ApiError ? err : new ApiError(530, String(err));
          Object.assign(j, {
            status: 2,
            resultCode: e.code,
            result: { errorcode: e.code, errortext: e.text },
            completed: csDate(),
          });
        },
      );
    }, this.jobDurationMs);
    this.timers.add(t);
    return j;
  }

  // --- test-only endpoints ---------------------------------------------------------------------
  private testEndpoint(url: URL, method: string, body: string, res: ServerResponse): void {
    if (!this.opts.testEndpoints)
      return send(res, 404, { errorresponse: { errorcode: 404, errortext: 'not found' } });
    try {
      if (url.pathname === '/sim/faults' && method === 'POST') {
        this.faults.inject(JSON.parse(body));
        return send(res, 200, { faults: this.faults.pending() });
      }
      if (url.pathname === '/sim/faults' && method === 'DELETE') {
        this.faults.clear();
        return send(res, 200, { faults: [] });
      }
      if (url.pathname === '/sim/state' && method === 'GET') {
        return send(res, 200, {
          volumes: this.state
            .liveVolumes()
            .map((v) => ({ ...this.state.volumeJson(v), serial: this.state.serialOf(v.id) })),
          vms: [...this.state.vms.values()].map((v) => this.state.vmJson(v)),
          jobs: [...this.state.jobs.values()].map(jobJson),
          faults: this.faults.pending(),
        });
      }
      send(res, 404, { error: 'unknown test endpoint' });
    } catch (err) {
      send(res, 400, { error: String(err) });
    }
  }
}

function jobJson(j: SimJob): Record<string, unknown> {
  // §2.7: flat; pending jobs carry no jobresult, jobresulttype or completed.
  const out: Record<string, unknown> = {
    accountid: '00000000-0000-0000-0000-000000000002',
    userid: '00000000-0000-0000-0000-000000000003',
    cmd: `org.apache.cloudstack.api.command.user.volume.${j.cmd[0]!.toUpperCase()}${j.cmd.slice(1)}Cmd`,
    jobstatus: j.status,
    jobprocstatus: 0,
    jobresultcode: j.status === 2 ? j.resultCode : 0,
    jobinstancetype: 'Volume',
    ...(j.instanceId ? { jobinstanceid: j.instanceId } : {}),
    created: j.created,
    jobid: j.id,
  };
  if (j.status !== 0) {
    out.jobresulttype = 'object';
    out.jobresult = j.result;
    out.completed = j.completed;
  }
  return out;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=UTF-8' };
  const inner = Object.values(body as object)[0] as { errortext?: string } | undefined;
  if (status !== 200 && inner?.errortext)
    headers['x-description'] = encodeURIComponent(inner.errortext).slice(0, 500);
  res.writeHead(status, headers);
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      data += c;
      if (data.length > 1 << 20) req.destroy(new Error('body too large'));
    });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}
