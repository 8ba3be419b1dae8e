import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ControlActivities, VolumeFacts } from '../../activities/control/index.js';
import { namesOfKind } from '../../activities/control/kinds.js';
import type { HostActivities } from '../../activities/host/index.js';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import type { ExportRecord } from '../../src/db/exports.js';
import {
  DiskAlreadyMappedError,
  MappingMismatchError,
  NameCollisionError,
  NameUnknownError,
  type MappingPatch,
  type MappingRecord,
} from '../../src/db/mappings.js';
import type { OperationStart, StepAudit, StepRecord } from '../../src/db/operations.js';
import type { DmTable, ResolvedDevice } from '../../src/device/types.js';
import { mapperPathFor, namingFromEngineVolumeName, persistentNameFor } from '../../src/domain/naming.js';
import type { OperationStatus } from '../../src/domain/operations.js';
import { attachmentsOf, desiredVolumesOf } from '../../src/reconcile/desired.js';
import { computeDrift } from '../../src/reconcile/drift.js';
import { packInventory, unpackInventory } from '../../src/reconcile/inventory-codec.js';

/**
 * Recording fakes of every control and host activity, for the workflow tier (test/workflow): the
 * real workflow code runs on a real (local) Temporal server against these instead of CloudStack,
 * MariaDB and the appliance's kernel. Same names and signatures as the real activities (checked
 * by tsc, below), each over the in-memory state of one {@link FakeWorld}: CloudStack volumes,
 * mapping and export rows, the appliance's disks, dm devices and exports, and the audit trail.
 *
 * The fakes keep the real activities' contracts where the sagas depend on them: idempotence
 * ("already as wanted" is success), the compare-and-swap on the mapping version, "undo if
 * present" answers, the kernel's lowest-free /dev/vdX naming, hot-plug on attach to the
 * appliance. Every failure is a non-retryable ApplicationFailure, so a saga reacts at once
 * (Temporal's retry backoff is the lab's and the integration tier's business).
 *
 * Faults, per world: any named activity can fail before acting, act and then fail ("done, but
 * the reply was lost"), or block until released (to cancel while it is in flight). Every call —
 * local audit activities included — is recorded in order, with when it started and settled.
 */

export type ControlName = keyof ControlActivities;
export type HostName = keyof HostActivities;
export type ActivityName = ControlName | HostName;
/** The audit trail's writes (kind `audit`): local activities around every step, not steps themselves. */
const AUDIT_ACTIVITIES: ReadonlySet<ActivityName> = new Set<ActivityName>(namesOfKind('audit'));
export const isAuditActivity = (a: ActivityName) => AUDIT_ACTIVITIES.has(a);
/** The audit row a step's database write carries, recorded completed with it (workflows/saga.ts). */
export const carriedAudit = (c: { args: unknown[] }): StepAudit | undefined =>
  (c.args[0] as { audit?: StepAudit } | undefined)?.audit;

export const INJECTED = 'InjectedFault';
/**
 * Activities that change nothing, here as in the real ones: "acts, then fails" is "fails" for
 * them, so a matrix need not run both.
 */
export const READ_ONLY: ReadonlySet<ActivityName> = new Set<ActivityName>([
  'csGetVolume',
  'csFindCreated',
  'dbGetMapping',
  'dbCheckName',
  'dbGetExport',
  'dbNameInUse',
  'reconCompare',
  'hostListDevices',
  'hostCorrelate',
  'hostFindBySerial',
  'hostWaitGone',
  'hostDmTable',
  'hostExportConfigured',
  'hostVolumeState',
  'hostInventory',
]);

const GIB = 1024 ** 3;
const VIRTIO_MAJOR = 254;

export interface FakeVolume {
  id: string;
  name: string;
  zoneId: string;
  sizeBytes: number;
  /** Allocated until first attached, then Ready (one way, as in CloudStack). */
  state: 'Allocated' | 'Ready';
  attachedTo: string | null;
  deviceId: number | null;
}
export interface FakeRow extends MappingRecord {
  createdByOperationId: string | null;
}
export interface FakeDm {
  uuid: string;
  table: DmTable;
  openCount: number;
}
export interface FakeDisk {
  serial: string;
  sizeBytes: number;
}
export interface FakeOperation extends OperationStart {
  status: OperationStatus;
  /** Every status written, in order (running → needs_attention → … → compensated). */
  statuses: OperationStatus[];
  response: unknown;
  error: string | null;
  finished: boolean;
}

export type FaultKind = 'fail-before' | 'fail-after' | 'hold';

export interface CallRecord {
  activity: ActivityName;
  args: unknown[];
  local: boolean;
  /** When the workflow scheduled it (server clock, ms): tells calls made after an event apart. */
  scheduledAt: number;
  /** Ticks of one clock shared by starts and ends: orders calls against each other. */
  start: number;
  end?: number;
  /** When it settled (wall clock, ms: the same clock as `scheduledAt` on this host). */
  endedAt?: number;
  outcome?: 'ok' | 'error' | FaultKind | 'cancelled';
  error?: string;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** A call held by a `hold` fault: `started` once it runs, blocked until `release()`, then it acts. */
export class Hold {
  /** The call, once it started. */
  call: CallRecord | undefined;
  /** The held call heard its cancellation (Temporal delivers it in a heartbeat's reply). */
  cancelSeen = false;
  private readonly startedD = deferred();
  private readonly cancelD = deferred();
  private readonly releaseD = deferred();
  readonly started = this.startedD.promise;
  readonly cancelRequested = this.cancelD.promise;
  readonly released = this.releaseD.promise;
  constructor(
    readonly activity: ActivityName,
    /** Once released and done: return its result (default), or report the cancellation it heard. */
    readonly afterRelease: 'result' | 'cancelled' = 'result',
  ) {}
  release(): void {
    this.releaseD.resolve();
  }
  /** @internal */ markStarted(call: CallRecord): void {
    this.call = call;
    this.startedD.resolve();
  }
  /** @internal */ markCancel(): void {
    this.cancelSeen = true;
    this.cancelD.resolve();
  }
}

interface Fault {
  activity: ActivityName;
  /** The nth call of the activity in this world (1-based) is the first one hit. */
  nth: number;
  /** How many consecutive calls from the nth are hit. */
  times: number;
  kind: FaultKind;
  hold?: Hold;
}

const fail = (type: string, message: string) => ApplicationFailure.nonRetryable(message, type);
const clone = <T>(v: T): T => (v === undefined ? v : structuredClone(v));

/** The kernel's name for the nth virtio disk (0 → vda, 25 → vdz, 26 → vdaa). */
function kernelName(n: number): string {
  let s = '';
  for (n += 1; n > 0; n = Math.floor((n - 1) / 26)) s = String.fromCharCode(97 + ((n - 1) % 26)) + s;
  return `vd${s}`;
}
function diskIndexOf(name: string): number {
  let n = 0;
  for (const c of name.slice(2)) n = n * 26 + (c.charCodeAt(0) - 96);
  return n - 1;
}
function sameTable(a: DmTable, b: DmTable): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
function matches(row: MappingRecord, patch: MappingPatch): boolean {
  return (Object.entries(patch) as [keyof MappingPatch, unknown][]).every(
    ([k, v]) => v === undefined || row[k] === v,
  );
}

/** The state of one test case: one appliance, its VMs and volumes, and everything recorded. */
export class FakeWorld {
  readonly volumes = new Map<string, FakeVolume>();
  /** VM ids CloudStack knows (attach to any other is VirtualMachineNotFound). */
  readonly vms = new Set<string>();
  readonly rows = new Map<string, FakeRow>();
  /** nbd_exports, by volume id. */
  readonly exportRows = new Map<string, ExportRecord>();
  /** The appliance's virtio disks by kernel name (vda is its own root disk). */
  readonly disks = new Map<string, FakeDisk>();
  readonly dm = new Map<string, FakeDm>();
  /** Configured exports: export name → target path. */
  readonly exports = new Map<string, string>();
  readonly operations = new Map<string, FakeOperation>();
  readonly steps: StepRecord[] = [];
  readonly calls: CallRecord[] = [];
  private readonly faults: Fault[] = [];
  private readonly counts = new Map<ActivityName, number>();
  private tick = 0;
  private reconRuns = 0;
  private closed = false;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly applianceVmId: string,
    otherVms: string[] = [],
  ) {
    this.vms.add(applianceVmId);
    for (const vm of otherVms) this.vms.add(vm);
    this.disks.set('vda', { serial: 'appliance-root', sizeBytes: 20 * GIB });
  }

  // --- faults ----------------------------------------------------------------------------------

  /** The nth call of `activity` (counting from the world's start) acts, then fails for good. */
  failAfter(activity: ActivityName, nth = 1, times = 1): void {
    this.faults.push({ activity, nth, times, kind: 'fail-after' });
  }
  /** The nth call of `activity` fails for good without acting (`times` calls in a row). */
  failBefore(activity: ActivityName, nth = 1, times = 1): void {
    this.faults.push({ activity, nth, times, kind: 'fail-before' });
  }
  /** The nth call of `activity` blocks (heartbeating, so it hears a cancel) until released. */
  hold(activity: ActivityName, nth = 1, afterRelease: 'result' | 'cancelled' = 'result'): Hold {
    const hold = new Hold(activity, afterRelease);
    this.faults.push({ activity, nth, times: 1, kind: 'hold', hold });
    return hold;
  }
  /** Release every hold, and let nothing block again (end of a test, worker shutdown). */
  close(): void {
    this.closed = true;
    for (const f of this.faults) f.hold?.release();
  }

  // --- what the tests read ---------------------------------------------------------------------

  /**
   * Resolves once `pred` holds, re-checked after every call starts or settles (nothing else
   * changes a world); rejects naming `what` after `ms`. An abort of `signal` resolves it quietly.
   */
  until(pred: () => boolean, ms: number, what: string, signal?: AbortSignal): Promise<void> {
    if (pred() || signal?.aborted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        this.waiters.delete(check);
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const check = () => {
        if (pred()) done();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        signal?.removeEventListener('abort', done);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.add(check);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
  /** Every call made so far has settled (a sibling of a failed parallel read may still run). */
  quiet(ms = 10_000): Promise<void> {
    return this.until(() => this.calls.every((c) => c.end !== undefined), ms, 'every call to settle');
  }
  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Calls of the saga's step activities (not the audit writes), as names in order. */
  activityCalls(): ActivityName[] {
    return this.calls.filter((c) => !isAuditActivity(c.activity)).map((c) => c.activity);
  }
  /** The audit steps of an operation as `phase:step:status`, in the saga's own order (seq). */
  audit(operationId: string): string[] {
    return this.steps
      .filter((s) => s.operationId === operationId)
      .sort((a, b) => a.seq - b.seq)
      .map((s) => `${s.phase}:${s.step}:${s.status}`);
  }
  /**
   * Everything a saga may change, comparable with deepEqual: CloudStack's view of each volume,
   * the rows (without version and last operation: bookkeeping), the appliance's disks, dm
   * devices and exports. Not the audit trail: it grows by design.
   */
  state() {
    const sorted = <V>(m: Map<string, V>) =>
      Object.fromEntries([...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
    const volumes = [...this.volumes.values()].map((v) => ({
      id: v.id,
      name: v.name,
      sizeBytes: v.sizeBytes,
      attachedTo: v.attachedTo,
      deviceId: v.deviceId,
    }));
    const rows = [...this.rows.values()].map((r) => {
      const { version: _v, lastOperationId: _l, createdByOperationId: _c, ...rest } = r;
      return rest;
    });
    return clone({
      volumes: volumes.sort((a, b) => (a.id < b.id ? -1 : 1)),
      rows: rows.sort((a, b) => (a.volumeId < b.volumeId ? -1 : 1)),
      exportRows: sorted(this.exportRows),
      disks: sorted(this.disks),
      dm: sorted(this.dm),
      exports: sorted(this.exports),
    });
  }

  // --- seeding (state a saga starts from) ------------------------------------------------------

  addVolume(v: Partial<FakeVolume> & { id?: string } = {}): FakeVolume {
    const vol: FakeVolume = {
      id: v.id ?? randomUUID(),
      name: v.name ?? 'vol',
      zoneId: v.zoneId ?? randomUUID(),
      sizeBytes: v.sizeBytes ?? GIB,
      state: v.state ?? 'Allocated',
      attachedTo: null,
      deviceId: null,
    };
    this.volumes.set(vol.id, vol);
    if (v.attachedTo) this.plugInto(vol, v.attachedTo, v.deviceId ?? undefined);
    return vol;
  }

  // --- the machinery every fake goes through ---------------------------------------------------

  /** @internal Run one activity call: record it, apply any fault, act. */
  async invoke<T>(activity: ActivityName, args: unknown[], act: () => T): Promise<T> {
    const ctx = Context.current();
    const call: CallRecord = {
      activity,
      args: clone(args),
      local: ctx.info.isLocal,
      scheduledAt: ctx.info.scheduledTimestampMs,
      start: this.tick++,
    };
    this.calls.push(call);
    this.notify();
    const n = (this.counts.get(activity) ?? 0) + 1;
    this.counts.set(activity, n);
    const fault = this.faults.find((f) => f.activity === activity && n >= f.nth && n < f.nth + f.times);
    const settle = (outcome: NonNullable<CallRecord['outcome']>, error?: unknown) => {
      call.end = this.tick++;
      call.endedAt = Date.now();
      call.outcome = outcome;
      if (error) call.error = (error as Error).message;
      this.notify();
    };
    try {
      if (fault?.kind === 'fail-before') {
        throw fail(INJECTED, `injected: ${activity} failed before acting`);
      }
      if (fault?.kind === 'hold') await this.holdHere(fault.hold!, call, ctx);
      const result = clone(act());
      // A write that carries its step's audit row records it in the same transaction: with the
      // write, before a lost reply (fail-after), never after a refusal (act threw).
      const audit = carriedAudit(call);
      if (audit)
        this.auditStep({
          ...audit,
          phase: 'forward',
          status: 'completed',
          finishedAt: new Date().toISOString(),
        });
      if (fault?.kind === 'fail-after') {
        throw fail(INJECTED, `injected: ${activity} acted, then its reply was lost`);
      }
      if (fault?.hold?.cancelSeen && fault.hold.afterRelease === 'cancelled')
        throw new CancelledFailure(`${activity}: acted, then reported the cancellation`);
      settle('ok');
      return result;
    } catch (err) {
      const outcome =
        err instanceof CancelledFailure
          ? 'cancelled'
          : fault && fault.kind !== 'hold' && (err as ApplicationFailure).type === INJECTED
            ? fault.kind
            : 'error';
      settle(outcome, err);
      throw err;
    }
  }

  private async holdHere(hold: Hold, call: CallRecord, ctx: Context): Promise<void> {
    const onCancel = () => hold.markCancel();
    if (ctx.cancellationSignal.aborted) onCancel();
    else ctx.cancellationSignal.addEventListener('abort', onCancel, { once: true });
    hold.markStarted(call);
    // Heartbeat while held: the server delivers a cancel request to a remote activity only in a
    // heartbeat's reply (a local one hears it from its workflow, through the same signal).
    while (!this.closed) {
      if (!ctx.info.isLocal) ctx.heartbeat();
      const released = await Promise.race([
        hold.released.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 20)),
      ]);
      if (released) break;
    }
  }

  // --- CloudStack ------------------------------------------------------------------------------

  private volume(id: string): FakeVolume {
    const v = this.volumes.get(id);
    if (!v) throw fail('VolumeNotFound', `volume ${id} does not exist in CloudStack`);
    return v;
  }
  facts(v: FakeVolume): VolumeFacts {
    return {
      id: v.id,
      name: v.name,
      type: 'DATADISK',
      state: v.state,
      sizeBytes: v.sizeBytes,
      attachedTo: v.attachedTo,
      deviceId: v.attachedTo ? v.deviceId : null,
    };
  }
  /** Attach in CloudStack; on the appliance the kernel hot-plugs the disk at the lowest free vdX. */
  private plugInto(v: FakeVolume, vmId: string, deviceId?: number): void {
    v.attachedTo = vmId;
    v.state = 'Ready';
    v.deviceId = deviceId ?? 1;
    if (vmId !== this.applianceVmId) return;
    let i = 0;
    while (this.disks.has(kernelName(i))) i++;
    this.disks.set(kernelName(i), { serial: diskSerialFor(v.id), sizeBytes: v.sizeBytes });
  }
  private unplug(v: FakeVolume): void {
    if (v.attachedTo === this.applianceVmId) {
      for (const [k, d] of this.disks) if (d.serial === diskSerialFor(v.id)) this.disks.delete(k);
    }
    v.attachedTo = null;
    v.deviceId = null;
  }
  csAttach(a: { volumeId: string; vmId: string; deviceId?: number }): VolumeFacts {
    const v = this.volume(a.volumeId);
    if (v.attachedTo === a.vmId && (a.deviceId === undefined || v.deviceId === a.deviceId))
      return this.facts(v);
    if (v.attachedTo)
      throw fail(
        'CloudStackConflictError',
        `volume ${v.id} is attached to VM ${v.attachedTo}, not ${a.vmId}`,
      );
    if (!this.vms.has(a.vmId))
      throw fail('VirtualMachineNotFound', `virtual machine ${a.vmId} does not exist in CloudStack`);
    this.plugInto(v, a.vmId, a.deviceId);
    return this.facts(v);
  }
  csDetach(a: { volumeId: string; fromVmId?: string }): VolumeFacts {
    const v = this.volume(a.volumeId);
    if (!v.attachedTo) return this.facts(v);
    if (a.fromVmId && v.attachedTo !== a.fromVmId)
      throw fail(
        'CloudStackConflictError',
        `volume ${v.id} is attached to VM ${v.attachedTo}, not ${a.fromVmId}`,
      );
    this.unplug(v);
    return this.facts(v);
  }
  private findCreated(a: { name: string; sizeGb: number; zoneId: string }): FakeVolume | undefined {
    const same = [...this.volumes.values()].filter(
      (v) => v.name === a.name && v.zoneId === a.zoneId && !v.attachedTo && v.sizeBytes === a.sizeGb * GIB,
    );
    return same.length === 1 ? same[0] : undefined;
  }
  csCreate(a: { name: string; sizeGb: number; zoneId: string }): VolumeFacts {
    const found = this.findCreated(a);
    if (found) return this.facts(found);
    return this.facts(this.addVolume({ name: a.name, zoneId: a.zoneId, sizeBytes: a.sizeGb * GIB }));
  }
  csFindCreated(a: { name: string; sizeGb: number; zoneId: string }): VolumeFacts | null {
    const v = this.findCreated(a);
    return v ? this.facts(v) : null;
  }
  csDelete(a: { volumeId: string }): void {
    const v = this.volumes.get(a.volumeId);
    if (!v) return;
    if (v.attachedTo)
      throw fail(
        'CloudStackError',
        `deleteVolume: please detach volume ${v.id} from VM ${v.attachedTo} first`,
      );
    this.volumes.delete(v.id);
  }

  // --- database --------------------------------------------------------------------------------

  private record(r: FakeRow): MappingRecord {
    const { createdByOperationId: _c, ...m } = r;
    return clone(m);
  }
  /** refuseTaken (src/db/mappings.ts): the name of (VM, disk), or the refusal assigning it meets. */
  private refuseTaken(naming: { sourceVmName: string; diskIndex: number }, volumeId = ''): string {
    const others = [...this.rows.values()].filter((r) => r.volumeId !== volumeId);
    const sameDisk = others.find(
      (r) => r.sourceVmName === naming.sourceVmName && r.diskIndex === naming.diskIndex,
    );
    if (sameDisk) throw new DiskAlreadyMappedError(naming.sourceVmName, naming.diskIndex, sameDisk.volumeId);
    const name = persistentNameFor(naming.sourceVmName, naming.diskIndex);
    const holder = others.find((r) => r.persistentName === name);
    if (holder) throw new NameCollisionError(name, naming, holder);
    return name;
  }
  /** The real activity's refusals: permanent, typed by the error's name. */
  private refusal<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof Error && 'retryable' in err && err.retryable === false)
        throw fail(err.name, err.message);
      throw err;
    }
  }
  dbAssignName(input: Parameters<ControlActivities['dbAssignName']>[0]): {
    mapping: MappingRecord;
    created: boolean;
  } {
    return this.refusal(() => {
      const row = this.rows.get(input.volumeId);
      const asked =
        input.sourceVmName !== undefined && input.diskIndex !== undefined
          ? { sourceVmName: input.sourceVmName, diskIndex: input.diskIndex }
          : undefined;
      if (row && asked && (row.sourceVmName !== asked.sourceVmName || row.diskIndex !== asked.diskIndex))
        throw new MappingMismatchError(input.volumeId, row, asked);
      if (row?.persistentName) return { mapping: this.record(row), created: false };
      const naming =
        asked ??
        (row ? { sourceVmName: row.sourceVmName, diskIndex: row.diskIndex } : undefined) ??
        (input.volumeName !== undefined ? namingFromEngineVolumeName(input.volumeName) : undefined);
      if (!naming) throw new NameUnknownError(input.volumeId, input.volumeName);
      const name = this.refuseTaken(naming, input.volumeId);
      const next: FakeRow = row
        ? { ...row, persistentName: name, mapperPath: mapperPathFor(name), version: row.version + 1 }
        : {
            volumeId: input.volumeId,
            ...naming,
            applianceVmId: input.applianceVmId,
            location: 'detached',
            targetVmId: null,
            cloudstackDeviceId: null,
            devicePath: null,
            virtioSerial: input.virtioSerial,
            sizeBytes: input.sizeBytes,
            persistentName: name,
            mapperPath: mapperPathFor(name),
            dmState: 'absent',
            lastOperationId: input.operationId,
            version: 0,
            createdByOperationId: input.operationId,
          };
      next.lastOperationId = input.operationId;
      this.rows.set(input.volumeId, next);
      return { mapping: this.record(next), created: true };
    });
  }
  dbCheckName(a: { sourceVmName?: string; diskIndex?: number; volumeName: string }): string {
    return this.refusal(() => {
      const naming =
        a.sourceVmName !== undefined && a.diskIndex !== undefined
          ? { sourceVmName: a.sourceVmName, diskIndex: a.diskIndex }
          : namingFromEngineVolumeName(a.volumeName);
      if (!naming) throw new NameUnknownError('(new)', a.volumeName);
      return this.refuseTaken(naming);
    });
  }
  /** Only a row this operation created, back in its first state (detached, no dm, no export). */
  dbReleaseName(a: { volumeId: string; operationId: string }): boolean {
    const r = this.rows.get(a.volumeId);
    if (
      !r ||
      r.createdByOperationId !== a.operationId ||
      r.location !== 'detached' ||
      r.dmState !== 'absent' ||
      this.exportRows.has(a.volumeId)
    )
      return false;
    return this.rows.delete(a.volumeId);
  }
  private update(r: FakeRow, patch: MappingPatch, operationId: string): MappingRecord {
    for (const [k, v] of Object.entries(patch) as [keyof MappingPatch, never][])
      if (v !== undefined) r[k] = v;
    r.version++;
    r.lastOperationId = operationId;
    return this.record(r);
  }
  dbUpdateMapping(a: {
    volumeId: string;
    expectedVersion: number;
    patch: MappingPatch;
    operationId: string;
  }): MappingRecord {
    const r = this.rows.get(a.volumeId);
    if (r && r.version === a.expectedVersion) return this.update(r, a.patch, a.operationId);
    // Our own earlier attempt committed before its reply was lost: that is success.
    if (r && r.lastOperationId === a.operationId && matches(r, a.patch)) return this.record(r);
    throw fail(
      'StaleMapping',
      `device mapping of volume ${a.volumeId} changed since version ${a.expectedVersion} (concurrent writer)`,
    );
  }
  dbRestoreMapping(a: { before: MappingRecord; operationId: string }): void {
    const r = this.rows.get(a.before.volumeId);
    if (!r) return;
    const { location, targetVmId, cloudstackDeviceId, devicePath, dmState } = a.before;
    const patch: MappingPatch = { location, targetVmId, cloudstackDeviceId, devicePath, dmState };
    if (!matches(r, patch)) this.update(r, patch, a.operationId);
  }
  dbClearStaleDevicePath(a: { devicePath: string; exceptVolumeId: string }): string[] {
    const stale = [...this.rows.values()].filter(
      (r) => r.devicePath === a.devicePath && r.volumeId !== a.exceptVolumeId,
    );
    for (const r of stale) {
      r.devicePath = null;
      r.version++;
    }
    return stale.map((r) => r.volumeId);
  }
  dbDeleteMapping(a: { volumeId: string }): boolean {
    this.exportRows.delete(a.volumeId);
    return this.rows.delete(a.volumeId);
  }

  // --- audit trail -----------------------------------------------------------------------------

  auditOperationStart(o: OperationStart): void {
    const had = this.operations.get(o.operationId);
    if (had) {
      had.runId = o.runId;
      return;
    }
    this.operations.set(o.operationId, {
      ...clone(o),
      status: 'running',
      statuses: ['running'],
      response: null,
      error: null,
      finished: false,
    });
  }
  auditOperationStatus(a: Parameters<ControlActivities['auditOperationStatus']>[0]): void {
    const op = this.operations.get(a.operationId);
    if (!op) return; // an UPDATE that matches no row
    op.status = a.status;
    op.statuses.push(a.status);
    if (a.response !== undefined) op.response = clone(a.response);
    if (a.error) op.error = a.error;
    if (a.volumeId) op.volumeId = a.volumeId;
    if (a.finished) op.finished = true;
  }
  auditStep(s: StepRecord): void {
    const i = this.steps.findIndex((x) => x.operationId === s.operationId && x.seq === s.seq);
    if (i >= 0) this.steps[i] = { ...this.steps[i]!, ...clone(s) };
    else this.steps.push(clone(s));
  }

  // --- reconciliation (control side) -----------------------------------------------------------

  reconCompare(a: Parameters<ControlActivities['reconCompare']>[0]) {
    const rows = [...this.rows.values()].filter((r) => r.applianceVmId === a.applianceVmId);
    // CloudStack lists every volume it has, as listVolumes() does for the real activity.
    const listed = [...this.volumes.values()].map((v) => ({
      id: v.id,
      virtualmachineid: v.attachedTo ?? undefined,
    }));
    return computeDrift(
      desiredVolumesOf(rows, this.exportRows),
      unpackInventory(a.inventory),
      { attachments: attachmentsOf(rows, listed) },
      a,
    );
  }
  nextReconRun(): number {
    return ++this.reconRuns;
  }

  // --- the appliance ---------------------------------------------------------------------------

  private resolved(kernel: string, d: FakeDisk): ResolvedDevice {
    return {
      devicePath: `/dev/${kernel}`,
      kernelName: kernel,
      serial: d.serial,
      sizeBytes: d.sizeBytes,
      method: 'sysfs-serial',
    };
  }
  findBySerial(serial: string): ResolvedDevice | null {
    for (const [k, d] of this.disks) if (d.serial === serial) return this.resolved(k, d);
    return null;
  }
  /** Correlation's answer at once: in memory the disk is there with its attach, or never comes. */
  correlate(a: { serial: string; expectedSizeBytes?: number; timeoutMs: number }): ResolvedDevice {
    const dev = this.findBySerial(a.serial);
    if (!dev)
      throw fail(
        'CorrelationTimeoutError',
        `no block device with virtio serial ${a.serial} appeared within ${a.timeoutMs} ms ` +
          `(devices seen: ${[...this.disks.keys()].join(', ')})`,
      );
    if (a.expectedSizeBytes !== undefined && dev.sizeBytes !== a.expectedSizeBytes)
      throw fail(
        'CorrelationError',
        `${dev.devicePath} is ${dev.sizeBytes} bytes, expected ${a.expectedSizeBytes}`,
      );
    return dev;
  }
  waitGone(a: { serial: string }): void {
    const dev = this.findBySerial(a.serial);
    if (dev)
      throw fail('DeviceStillPresentError', `device ${dev.kernelName} with serial ${a.serial} still present`);
  }
  /** `major:minor` of a present disk, as dm prints devices in tables. */
  deviceNumber(devicePath: string): string {
    const kernel = devicePath.replace(/^\/dev\//, '');
    if (!this.disks.has(kernel))
      throw fail('DmNotFoundError', `stat ${devicePath}: No such file or directory`);
    return `${VIRTIO_MAJOR}:${diskIndexOf(kernel) * 16}`;
  }
  private presentNumbers(): Set<string> {
    return new Set([...this.disks.keys()].map((k) => `${VIRTIO_MAJOR}:${diskIndexOf(k) * 16}`));
  }

  /** DeviceMapper.ensureTable: create (tagged VOLLIFE-) or reload; never touches a device not ours. */
  dmEnsureTable(name: string, table: DmTable): { changed: boolean; previous?: DmTable } {
    const wanted: DmTable =
      table.kind === 'linear' && table.device.startsWith('/')
        ? { ...table, device: this.deviceNumber(table.device) }
        : clone(table);
    // The kernel refuses a table over a device that is not there.
    if (wanted.kind === 'linear' && !this.presentNumbers().has(wanted.device))
      throw fail(
        'DmNotFoundError',
        `device-mapper: reload ioctl on ${name} failed: No such device or address`,
      );
    const current = this.dm.get(name);
    if (!current) {
      this.dm.set(name, { uuid: `VOLLIFE-${name}`, table: wanted, openCount: 0 });
      return { changed: true };
    }
    if (sameTable(current.table, wanted)) return { changed: false, previous: clone(current.table) };
    if (!current.uuid.startsWith('VOLLIFE-'))
      throw fail('DmConflictError', `dm device ${name} exists but is not ours (uuid "${current.uuid}")`);
    const previous = current.table;
    current.table = wanted;
    return { changed: true, previous: clone(previous) };
  }
  dmEnsureLinear(name: string, devicePath: string) {
    const kernel = devicePath.replace(/^\/dev\//, '');
    const number = this.deviceNumber(devicePath);
    const sectors = this.disks.get(kernel)!.sizeBytes / 512;
    return this.dmEnsureTable(name, { kind: 'linear', sectors, device: number, offset: 0 });
  }
  dmRemove(name: string): { removed: boolean; deferred: boolean } {
    const d = this.dm.get(name);
    if (!d) return { removed: false, deferred: false };
    if (!d.uuid.startsWith('VOLLIFE-'))
      throw fail('DmConflictError', `dm device ${name} is not ours (uuid "${d.uuid}"): not removing it`);
    this.dm.delete(name);
    return { removed: true, deferred: false };
  }
  resolveConflicts(a: { name: string; devicePath: string }): string[] {
    const mine = this.deviceNumber(a.devicePath);
    const resolved: string[] = [];
    for (const [other, d] of this.dm) {
      if (other === a.name || !d.uuid.startsWith('VOLLIFE-') || d.table.kind !== 'linear') continue;
      if (d.table.device === a.devicePath || d.table.device === mine) {
        d.table = { kind: 'error', sectors: d.table.sectors };
        resolved.push(other);
      }
    }
    return resolved;
  }
  exportEnsure(a: { exportName: string; targetPath: string; aliases?: string[] }) {
    const had = this.exports.get(a.exportName);
    this.exports.set(a.exportName, a.targetPath);
    for (const alias of a.aliases ?? []) this.exports.set(alias, a.targetPath);
    return {
      created: had === undefined,
      changed: had !== a.targetPath,
      configPath: `/srv/nbd-exports/${a.exportName}`,
      backend: 'nbdkit-dir' as const,
      uri: exportUri(a.exportName),
    };
  }
  exportRemove(a: { exportName: string; onlyIfTarget?: string; aliases?: string[] }): { removed: boolean } {
    const removeOne = (name: string) =>
      a.onlyIfTarget !== undefined && this.exports.get(name) !== a.onlyIfTarget
        ? false
        : this.exports.delete(name);
    for (const alias of a.aliases ?? []) removeOne(alias);
    return { removed: removeOne(a.exportName) };
  }
  inventory() {
    return packInventory({
      dm: [...this.dm].map(([name, d]) => ({
        name,
        table: clone(d.table),
        openCount: d.openCount,
        uuid: d.uuid,
      })),
      devices: [...this.disks].map(([k, d]) => ({
        kernelName: k,
        devicePath: `/dev/${k}`,
        serial: d.serial,
        devNumber: this.deviceNumber(`/dev/${k}`),
      })),
      exportsConfigured: [...this.exports].map(([exportName, targetPath]) => ({ exportName, targetPath })),
      exportsServed: [...this.exports.keys()],
    });
  }
}

export const exportUri = (exportName: string) => `nbd://127.0.0.1:10809/${exportName}`;

/**
 * The worlds of the tests running on one worker, by workflow id: every activity call finds its
 * world through the workflow that scheduled it (Temporal tells the activity), so any number of
 * cases run concurrently on one worker, each on its own state.
 */
export class FakeFleet {
  private readonly worlds = new Map<string, FakeWorld>();

  /** Route the activities of workflow `workflowId` to `world` (one world may serve several). */
  add(workflowId: string, world: FakeWorld): FakeWorld {
    this.worlds.set(workflowId, world);
    return world;
  }
  /** Release every hold (before the worker shuts down). */
  close(): void {
    for (const w of this.worlds.values()) w.close();
  }

  private world(): FakeWorld {
    const id = Context.current().info.workflowExecution?.workflowId ?? '(none)';
    const w = this.worlds.get(id);
    if (!w) throw fail('NoFakeWorld', `no fake world for workflow ${id}`);
    return w;
  }
  private run<T>(activity: ActivityName, args: unknown[], act: (w: FakeWorld) => T): Promise<T> {
    const w = this.world();
    return w.invoke(activity, args, () => act(w));
  }

  /** Fakes of activities/control: same names and signatures (checked below). */
  control() {
    const run = this.run.bind(this);
    const fakes = {
      csGetVolume: (volumeId: string) =>
        run('csGetVolume', [volumeId], (w) => {
          const v = w.volumes.get(volumeId);
          return v ? w.facts(v) : null;
        }),
      csAttach: (a: { volumeId: string; vmId: string; deviceId?: number }) =>
        run('csAttach', [a], (w) => w.csAttach(a)),
      csCreate: (a: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string }) =>
        run('csCreate', [a], (w) => w.csCreate(a)),
      csFindCreated: (a: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string }) =>
        run('csFindCreated', [a], (w) => w.csFindCreated(a)),
      csDetach: (a: { volumeId: string; fromVmId?: string }) => run('csDetach', [a], (w) => w.csDetach(a)),
      csDelete: (a: { volumeId: string }) => run('csDelete', [a], (w) => w.csDelete(a)),
      dbGetMapping: (volumeId: string) =>
        run('dbGetMapping', [volumeId], (w) => {
          const r = w.rows.get(volumeId);
          if (!r) return null;
          const { createdByOperationId: _c, ...m } = r;
          return m as MappingRecord;
        }),
      dbAssignName: (input: Parameters<ControlActivities['dbAssignName']>[0]) =>
        run('dbAssignName', [input], (w) => w.dbAssignName(input)),
      dbCheckName: (a: { sourceVmName?: string; diskIndex?: number; volumeName: string }) =>
        run('dbCheckName', [a], (w) => w.dbCheckName(a)),
      dbReleaseName: (a: { volumeId: string; operationId: string }) =>
        run('dbReleaseName', [a], (w) => w.dbReleaseName(a)),
      dbUpdateMapping: (a: Parameters<ControlActivities['dbUpdateMapping']>[0]) =>
        run('dbUpdateMapping', [a], (w) => w.dbUpdateMapping(a)),
      dbRestoreMapping: (a: { before: MappingRecord; operationId: string }) =>
        run('dbRestoreMapping', [a], (w) => w.dbRestoreMapping(a)),
      dbClearStaleDevicePath: (a: { devicePath: string; exceptVolumeId: string }) =>
        run('dbClearStaleDevicePath', [a], (w) => w.dbClearStaleDevicePath(a)),
      dbDeleteMapping: (a: { volumeId: string }) => run('dbDeleteMapping', [a], (w) => w.dbDeleteMapping(a)),
      dbGetExport: (volumeId: string) =>
        run('dbGetExport', [volumeId], (w) => clone(w.exportRows.get(volumeId) ?? null)),
      dbUpsertExport: ({ audit, ...e }: ExportRecord & { audit?: StepAudit }) =>
        run('dbUpsertExport', [{ ...e, audit }], (w) => {
          w.exportRows.set(e.volumeId, clone(e));
        }),
      dbDeleteExport: (a: { volumeId: string }) =>
        run('dbDeleteExport', [a], (w) => w.exportRows.delete(a.volumeId)),
      auditOperationStart: (o: OperationStart) =>
        run('auditOperationStart', [o], (w) => w.auditOperationStart(o)),
      auditOperationStatus: (a: Parameters<ControlActivities['auditOperationStatus']>[0]) =>
        run('auditOperationStatus', [a], (w) => w.auditOperationStatus(a)),
      auditStep: (s: StepRecord) => run('auditStep', [s], (w) => w.auditStep(s)),
      reconStart: (r: Parameters<ControlActivities['reconStart']>[0]) =>
        run('reconStart', [r], (w) => w.nextReconRun()),
      reconCompare: (a: Parameters<ControlActivities['reconCompare']>[0]) =>
        run('reconCompare', [a], (w) => w.reconCompare(a)),
      dbNameInUse: (name: string) =>
        run('dbNameInUse', [name], (w) =>
          [...w.rows.values()].some((r) => r.persistentName === name || r.volumeId === name),
        ),
      reconFinish: (a: Parameters<ControlActivities['reconFinish']>[0]) =>
        run('reconFinish', [a], () => undefined),
    } satisfies ControlActivities;
    return fakes;
  }

  /** Fakes of activities/host: same names and signatures (checked below). */
  host() {
    const run = this.run.bind(this);
    const fakes = {
      hostListDevices: () => run('hostListDevices', [], (w) => [...w.disks.keys()].sort()),
      hostCorrelate: (a: Parameters<HostActivities['hostCorrelate']>[0]) =>
        run('hostCorrelate', [a], (w) => w.correlate(a)),
      hostFindBySerial: (serial: string) => run('hostFindBySerial', [serial], (w) => w.findBySerial(serial)),
      hostWaitGone: (a: { serial: string; timeoutMs: number }) =>
        run('hostWaitGone', [a], (w) => w.waitGone(a)),
      hostDmTable: (n: string) => run('hostDmTable', [n], (w) => clone(w.dm.get(n)?.table ?? null)),
      hostDmEnsureLinear: (a: { name: string; devicePath: string }) =>
        run('hostDmEnsureLinear', [a], (w) => w.dmEnsureLinear(a.name, a.devicePath)),
      hostDmEnsureError: (a: { name: string; sectors: number }) =>
        run('hostDmEnsureError', [a], (w) => w.dmEnsureTable(a.name, { kind: 'error', sectors: a.sectors })),
      hostDmEnsureTable: (a: { name: string; table: DmTable }) =>
        run('hostDmEnsureTable', [a], (w) => w.dmEnsureTable(a.name, a.table)),
      hostDmRemove: (a: { name: string }) => run('hostDmRemove', [a], (w) => w.dmRemove(a.name)),
      hostResolveConflicts: (a: { name: string; devicePath: string }) =>
        run('hostResolveConflicts', [a], (w) => w.resolveConflicts(a)),
      hostExportEnsure: (a: { exportName: string; targetPath: string; aliases?: string[] }) =>
        run('hostExportEnsure', [a], (w) => w.exportEnsure(a)),
      hostExportRemove: (a: { exportName: string; onlyIfTarget?: string; aliases?: string[] }) =>
        run('hostExportRemove', [a], (w) => w.exportRemove(a)),
      hostExportConfigured: (exportName: string) =>
        run('hostExportConfigured', [exportName], (w) => w.exports.has(exportName)),
      hostVolumeState: (a: { name: string; exportName: string }) =>
        run('hostVolumeState', [a], (w) => ({
          dmTable: clone(w.dm.get(a.name)?.table ?? null),
          exportConfigured: w.exports.has(a.exportName),
        })),
      hostInventory: () => run('hostInventory', [], (w) => w.inventory()),
      hostRemoveIdleDm: (a: { name: string }) =>
        run('hostRemoveIdleDm', [a], (w): 'removed' | 'open' | 'gone' => {
          const d = w.dm.get(a.name);
          if (!d) return 'gone';
          if (d.openCount > 0) return 'open';
          w.dmRemove(a.name);
          return 'removed';
        }),
    } satisfies HostActivities;
    return fakes;
  }
}

/*
 * Drift guard: `satisfies` above already refuses a missing or unknown activity and a fake whose
 * result the workflows could not use; this also refuses a fake that takes other parameters than
 * the real activity (a parameter added, removed or retyped there).
 */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type ParamDrift<F, R> = {
  [K in keyof R]: K extends keyof F
    ? F[K] extends (...a: infer P) => unknown
      ? R[K] extends (...a: infer Q) => unknown
        ? Same<P, Q> extends true
          ? never
          : K
        : K
      : K
    : K;
}[keyof R];
type Fakes = ReturnType<FakeFleet['control']> & ReturnType<FakeFleet['host']>;
/** Fails to compile naming the activity whose fake's parameters drifted from the real one's. */
type NoDrift<K extends never> = K;
export type FakesMatchActivities = NoDrift<ParamDrift<Fakes, ControlActivities & HostActivities>>;
