import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { CancelledFailure, type ApplicationFailure } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { VolumeLifecycleClient, type OperationHandle } from '../../src/client/index.js';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import type { OperationResult, OperationStatus } from '../../src/domain/operations.js';
import { SA } from '../../src/temporal/search-attributes.js';
import { controlQueue, hostQueue } from '../../src/temporal/task-queues.js';
import { readHistoryLines } from '../support/histories.js';
import { STEPS } from '../support/saga-steps.js';
import { untilCancelRequested } from '../support/saga-state.js';
import {
  exportUri,
  FakeFleet,
  FakeWorld,
  carriedAudit,
  isAuditActivity,
  type ActivityName,
  type FakeOperation,
} from '../support/fake-activities.js';

/**
 * The workflow tier's stand: the real workflow code (bundled once per test file) on a local
 * Temporal dev server started by @temporalio/testing from the Temporal CLI scripts/test provides,
 * with every activity faked in memory (test/support/fake-activities.ts). One control worker and
 * one host worker (the appliance's queue) per file; cases run concurrently on them, each on its
 * own FakeWorld, found through its workflow id.
 */

/** The workflows under test; WORKFLOW_TIER_WORKFLOWS: a (mutated) copy, to see this tier catch a break. */
export const WORKFLOWS_PATH =
  process.env.WORKFLOW_TIER_WORKFLOWS ?? fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));
/** One appliance and one migrated VM for the whole file: the host queue is named after the appliance. */
export const APPLIANCE = randomUUID();
export const TARGET = randomUUID();
export const GIB = 1024 ** 3;
/** Deadline for anything a case waits on: a hang fails the case, not the whole file. */
export const DEADLINE_MS = 30_000;

export interface Tier {
  env: TestWorkflowEnvironment;
  /** The task-queue prefix its workers poll (for workflows started without the client). */
  prefix: string;
  volumes: VolumeLifecycleClient;
  fleet: FakeFleet;
  close(): Promise<void>;
}

export async function startTier(): Promise<Tier> {
  const cli = process.env.TEMPORAL_CLI;
  if (!cli) throw new Error('TEMPORAL_CLI is not set: run the workflow tier through ./scripts/test');
  // Activity failures are the point of these tests: the SDK's warning for each would drown the output.
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: cli },
      // The sagas upsert these: an unregistered one fails every workflow task.
      searchAttributes: Object.values(SA),
      extraArgs: [
        '--dynamic-config-value',
        'frontend.enableUpdateWorkflowExecution=true',
        // As scripts/lib/common.sh tunes its dev server: the one shard's queues read at most 20
        // times a second by default, ~100 ms a step however fast the step.
        '--dynamic-config-value',
        'history.transferProcessorMaxPollRPS=1000',
        '--dynamic-config-value',
        'history.timerProcessorMaxPollRPS=1000',
      ],
    },
  });
  const prefix = `wf-${randomBytes(3).toString('hex')}`;
  const fleet = new FakeFleet();
  // Heartbeats are throttled to 80% of the heartbeat timeout (8–16 s) by default; a held
  // activity must hear a cancel at once.
  const throttle = {
    maxHeartbeatThrottleInterval: '20 ms',
    defaultHeartbeatThrottleInterval: '20 ms',
  } as const;
  const [control, host] = await Promise.all([
    Worker.create({
      connection: env.nativeConnection,
      taskQueue: controlQueue(prefix),
      workflowsPath: WORKFLOWS_PATH,
      activities: fleet.control(),
      maxConcurrentWorkflowTaskExecutions: 100,
      ...throttle,
    }),
    Worker.create({
      connection: env.nativeConnection,
      taskQueue: hostQueue(prefix, APPLIANCE),
      activities: fleet.host(),
      ...throttle,
    }),
  ]);
  const running = Promise.all([control.run(), host.run()]);
  const volumes = new VolumeLifecycleClient({
    client: env.client,
    taskQueuePrefix: prefix,
    correlationTimeoutMs: 5_000,
  });
  return {
    env,
    prefix,
    volumes,
    fleet,
    async close() {
      await recordTierHistories(env, prefix);
      fleet.close();
      control.shutdown();
      host.shutdown();
      await running;
      await env.teardown();
    },
  };
}

/**
 * RECORD_HISTORIES=file.jsonl.gz: every ended workflow of this tier's run is added to that file,
 * one history per distinct path (workflow type, how it ended, the activities it called in order):
 * the recorded histories of a release, which test/unit/replay.test.ts replays against the code of
 * every release after it. Each test file appends its own gzip member.
 */
async function recordTierHistories(env: TestWorkflowEnvironment, prefix: string): Promise<void> {
  const file = process.env.RECORD_HISTORIES;
  if (!file?.endsWith('.jsonl.gz')) return;
  const seen = new Set((await readHistoryLines(file).catch(() => [])).map((h) => h.workflowId));
  const lines: string[] = [];
  for await (const w of env.client.workflow.list({ query: `TaskQueue="${controlQueue(prefix)}"` })) {
    if (w.status.name === 'RUNNING') continue;
    const history = await env.client.workflow.getHandle(w.workflowId, w.runId).fetchHistory();
    const calls = (history.events ?? []).map(
      (e) =>
        e.activityTaskScheduledEventAttributes?.activityType?.name ??
        (e.markerRecordedEventAttributes ? 'marker' : ''),
    );
    const digest = createHash('sha256').update(calls.join(',')).digest('hex').slice(0, 10);
    const workflowId = `${w.type}-${w.status.name.toLowerCase()}-${digest}`;
    if (seen.has(workflowId)) continue;
    seen.add(workflowId);
    lines.push(JSON.stringify({ workflowId, history }));
  }
  if (lines.length) await appendFile(file, gzipSync(lines.join('\n') + '\n'));
}

/** At most `n` cases at a time: the two CPUs are shared (and the server's one shard). */
export function limiter(n: number) {
  let active = 0;
  const queue: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active < n) active++;
    else await new Promise<void>((r) => queue.push(r)); // the slot is handed over, never freed between
    try {
      return await fn();
    } finally {
      const next = queue.shift();
      if (next) next();
      else active--;
    }
  };
}

export function within<T>(p: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// --- the states sagas start from -----------------------------------------------------------------

/** One volume of a case: its ids and the name the sagas give it. */
export interface Subject {
  world: FakeWorld;
  volumeId: string;
  vm: string;
  diskIndex: number;
  name: string;
  /** create: its operation id (the workflow id is `create:<operation id>`). */
  operationId: string;
}

export function subject(world: FakeWorld, volumeId = randomUUID()): Subject {
  const diskIndex = 3;
  return { world, volumeId, vm: 'wfvm', diskIndex, name: `wfvmdisk${diskIndex}`, operationId: randomUUID() };
}

const SECTORS = GIB / 512;
const linearOver = (kernel: string) => ({
  kind: 'linear' as const,
  sectors: SECTORS,
  device: `254:${(kernel.charCodeAt(2) - 97) * 16}`,
  offset: 0,
});

/** State seeds, each the state a completed saga leaves (sagas.test.ts proves it, saga by saga). */
export const seeds = {
  /** A CloudStack volume never seen by us (what attach starts from). */
  fresh(s: Subject): void {
    s.world.addVolume({ id: s.volumeId, name: 'data-vol', sizeBytes: GIB });
  },
  /** What create leaves: the volume, detached, and its row with the name. */
  created(s: Subject): void {
    seeds.fresh(s);
    s.world.rows.set(s.volumeId, row(s, { location: 'detached', dmState: 'absent', devicePath: null }));
  },
  /** What attach leaves: on the appliance as /dev/vdb, dm linear over it, exported. */
  onAppliance(s: Subject): void {
    s.world.addVolume({
      id: s.volumeId,
      name: 'data-vol',
      sizeBytes: GIB,
      state: 'Ready',
      attachedTo: APPLIANCE,
    });
    s.world.rows.set(
      s.volumeId,
      row(s, { location: 'appliance', dmState: 'linear', devicePath: '/dev/vdb' }),
    );
    s.world.dm.set(s.name, { uuid: `VOLLIFE-${s.name}`, table: linearOver('vdb'), openCount: 0 });
    exported(s);
  },
  /** What failover leaves: on the migrated VM, dm an error target, the export kept. */
  onTarget(s: Subject): void {
    s.world.addVolume({
      id: s.volumeId,
      name: 'data-vol',
      sizeBytes: GIB,
      state: 'Ready',
      attachedTo: TARGET,
    });
    s.world.rows.set(
      s.volumeId,
      row(s, { location: 'target', dmState: 'error', devicePath: null, targetVmId: TARGET }),
    );
    s.world.dm.set(s.name, {
      uuid: `VOLLIFE-${s.name}`,
      table: { kind: 'error', sectors: SECTORS },
      openCount: 0,
    });
    exported(s);
  },
  /** What detach leaves: detached, dm an error target, the export kept (answering errors). */
  detached(s: Subject): void {
    s.world.addVolume({ id: s.volumeId, name: 'data-vol', sizeBytes: GIB, state: 'Ready' });
    s.world.rows.set(s.volumeId, row(s, { location: 'detached', dmState: 'error', devicePath: null }));
    s.world.dm.set(s.name, {
      uuid: `VOLLIFE-${s.name}`,
      table: { kind: 'error', sectors: SECTORS },
      openCount: 0,
    });
    exported(s);
  },
  /** What delete leaves: nothing. */
  gone(): void {},
};

function row(
  s: Subject,
  r: {
    location: 'appliance' | 'target' | 'detached';
    dmState: 'linear' | 'error' | 'absent';
    devicePath: string | null;
    targetVmId?: string;
  },
) {
  return {
    volumeId: s.volumeId,
    sourceVmName: s.vm,
    diskIndex: s.diskIndex,
    applianceVmId: APPLIANCE,
    virtioSerial: diskSerialFor(s.volumeId),
    sizeBytes: GIB,
    persistentName: s.name,
    mapperPath: `/dev/mapper/${s.name}`,
    lastOperationId: null,
    version: 7,
    createdByOperationId: null,
    ...r,
    targetVmId: r.targetVmId ?? null,
    cloudstackDeviceId: r.location === 'detached' ? null : 1,
  };
}

function exported(s: Subject): void {
  const exportName = `migration-vol-${s.name}`;
  s.world.exports.set(exportName, `/dev/mapper/${s.name}`);
  // Also under the name the migration engine parses, the same device (workflows/volume-steps.ts).
  s.world.exports.set(`migration-vol-${s.volumeId}`, `/dev/mapper/${s.name}`);
  s.world.exportRows.set(s.volumeId, {
    exportName,
    volumeId: s.volumeId,
    targetPath: `/dev/mapper/${s.name}`,
    configPath: `/srv/nbd-exports/${exportName}`,
    backend: 'nbdkit-dir',
    status: 'active',
  });
}

// --- the sagas, on each path the matrix covers ---------------------------------------------------

export type SagaName = 'create' | 'attach' | 'detach' | 'failover' | 'failback' | 'delete';

export interface SagaPath {
  /** Test-name label, e.g. `detach (from the migrated VM)`. */
  label: string;
  saga: SagaName;
  seed(s: Subject): void;
  /** The state a completed run leaves (a seed), when it is one. */
  end?: (s: Subject) => void;
  start(t: Tier, s: Subject): Promise<OperationHandle>;
  /** Steps with a compensation on this path (README's table, in brackets). */
  undoable: string[];
  /** delete: the step after which nothing is undone. */
  pivot?: string;
}

const base = (s: Subject) => ({ volumeId: s.volumeId, applianceVmId: APPLIANCE });

export const PATHS = {
  create: {
    label: 'create',
    saga: 'create',
    seed: () => {},
    start: (t, s) =>
      t.volumes.create({
        operationId: s.operationId,
        applianceVmId: APPLIANCE,
        name: 'data-vol',
        sizeBytes: GIB,
        diskOfferingId: randomUUID(),
        zoneId: randomUUID(),
        sourceVmName: s.vm,
        diskKey: 2000 + s.diskIndex,
      }),
    undoable: ['cloudstack-create', 'assign-name'],
  },
  attach: {
    label: 'attach',
    saga: 'attach',
    seed: seeds.fresh,
    end: seeds.onAppliance,
    start: (t, s) => t.volumes.attach({ ...base(s), sourceVmName: s.vm, diskKey: 2000 + s.diskIndex }),
    undoable: ['assign-name', 'cloudstack-attach', 'dm-map', 'record-mapping', 'ensure-export'],
  },
  attachAgain: {
    label: 'attach (again, already on the appliance)',
    saga: 'attach',
    seed: seeds.onAppliance,
    end: seeds.onAppliance,
    start: (t, s) => t.volumes.attach(base(s)),
    // Attached before: CloudStack's attach is not undone.
    undoable: ['assign-name', 'dm-map', 'record-mapping', 'ensure-export'],
  },
  detach: {
    label: 'detach',
    saga: 'detach',
    seed: seeds.onAppliance,
    end: seeds.detached,
    start: (t, s) => t.volumes.detach(base(s)),
    undoable: ['dm-error', 'cloudstack-detach', 'record-location'],
  },
  detachFromTarget: {
    label: 'detach (from the migrated VM)',
    saga: 'detach',
    seed: seeds.onTarget,
    end: seeds.detached,
    start: (t, s) => t.volumes.detach(base(s)),
    undoable: ['cloudstack-detach-target', 'record-location'],
  },
  failover: {
    label: 'failover',
    saga: 'failover',
    seed: seeds.onAppliance,
    end: seeds.onTarget,
    start: (t, s) => t.volumes.failover({ ...base(s), targetVmId: TARGET }),
    undoable: ['dm-error', 'cloudstack-detach', 'cloudstack-attach-target', 'record-location'],
  },
  failback: {
    label: 'failback',
    saga: 'failback',
    seed: seeds.onTarget,
    end: seeds.onAppliance,
    start: (t, s) => t.volumes.failback(base(s)),
    undoable: ['cloudstack-detach-target', 'cloudstack-attach', 'dm-map', 'record-mapping', 'ensure-export'],
  },
  delete: {
    label: 'delete',
    saga: 'delete',
    seed: seeds.onAppliance,
    end: seeds.gone,
    start: (t, s) => t.volumes.delete(base(s)),
    undoable: ['remove-export', 'remove-dm', 'cloudstack-detach'],
    pivot: 'cloudstack-delete',
  },
  deleteFromTarget: {
    label: 'delete (failed over)',
    saga: 'delete',
    seed: seeds.onTarget,
    end: seeds.gone,
    start: (t, s) => t.volumes.delete(base(s)),
    undoable: ['remove-export', 'remove-dm', 'cloudstack-detach'],
    pivot: 'cloudstack-delete',
  },
} satisfies Record<string, SagaPath>;

/**
 * Each path's steps and the activity whose fault fails each (the last one the step calls), where
 * a list exists: test/support/saga-steps.ts for the paths the lab's step matrix runs, create's
 * here. sagas.test.ts checks them against what the workflows really do.
 */
export const LISTED: Partial<Record<keyof typeof PATHS, [step: string, activity: string][]>> = {
  create: [
    ['validate', 'dbCheckName'],
    ['cloudstack-create', 'csCreate'],
    ['assign-name', 'dbAssignName'],
  ],
  attach: STEPS.attach,
  detach: STEPS.detach,
  failover: STEPS.failover,
  failback: STEPS.failback,
  // As crash-cases.ts runs it: with the row removal after the pivot.
  delete: [...STEPS.delete, ['remove-rows', 'dbDeleteMapping']],
};

export function workflowIdOf(path: SagaPath, s: Subject): string {
  return path.saga === 'create' ? `create:${s.operationId}` : `volume:${s.volumeId}`;
}

/** A fresh world for one case, seeded, routed to by the workflow id the saga will run under. */
export function prepare(t: Tier, path: SagaPath): Subject {
  const world = new FakeWorld(APPLIANCE, [TARGET]);
  const s = subject(world);
  path.seed(s);
  t.fleet.add(workflowIdOf(path, s), world);
  return s;
}

// --- outcomes ------------------------------------------------------------------------------------

export type Outcome =
  | { kind: 'completed'; result: OperationResult }
  | { kind: 'failed'; type: string | undefined; message: string }
  | { kind: 'cancelled'; message: string }
  | { kind: 'parked'; op: FakeOperation };

/**
 * How the saga ends from now on — or `parked` as soon as it waits for an operator again (its
 * audit row says needs_attention once more than now), instead of a timeout.
 */
export async function outcome(h: OperationHandle, world: FakeWorld, ms = DEADLINE_MS): Promise<Outcome> {
  const ended = h.result().then(
    (result): Outcome => ({ kind: 'completed', result }),
    (err: unknown): Outcome => {
      if (!(err instanceof WorkflowFailedError)) throw err;
      if (err.cause instanceof CancelledFailure) return { kind: 'cancelled', message: err.cause.message };
      const cause = err.cause as ApplicationFailure | undefined;
      return { kind: 'failed', type: cause?.type ?? undefined, message: String(cause?.message) };
    },
  );
  const stop = new AbortController();
  const op = () => world.operations.get(h.operationId);
  const parks = () => op()?.statuses.filter((x) => x === 'needs_attention').length ?? 0;
  const parkedBefore = parks();
  const parked = world
    .until(() => parks() > parkedBefore, ms, `the ${h.type} saga to end`, stop.signal)
    .then((): Outcome | Promise<Outcome> => (stop.signal.aborted ? ended : { kind: 'parked', op: op()! }));
  try {
    return await Promise.race([ended, parked]);
  } finally {
    stop.abort();
  }
}

export function statusOf(world: FakeWorld, operationId: string): OperationStatus | undefined {
  return world.operations.get(operationId)?.status;
}

/** A handle on the saga's own workflow run (cancel, describe, history). */
export function handleOf(t: Tier, h: OperationHandle): WorkflowHandle {
  return t.env.client.workflow.getHandle(h.workflowId, h.runId);
}

/**
 * Until the workflow has seen a cancel request: the history holds the request and (unless
 * `recordedOnly`) a workflow task completed after it. For a step in a non-cancellable scope,
 * where no activity hears it; `recordedOnly` for a local step, whose workflow task stays open
 * while it runs.
 */
export function cancelSeenByWorkflow(t: Tier, h: OperationHandle, recordedOnly = false): Promise<void> {
  return untilCancelRequested(handleOf(t, h), {
    processed: !recordedOnly,
    timeoutMs: DEADLINE_MS,
    what: 'the workflow never processed the cancel request',
  });
}

/** The activity calls of the happy path, each as (activity, its nth call) and the step it precedes. */
export interface PlannedCall {
  activity: ActivityName;
  nth: number;
  /** The step whose completion is the next one recorded after this call: the call is in it or prepares it. */
  step: string;
}

/** Run `path` once with no fault: its calls (the fault sites) and its forward steps, in order. */
export async function happyRun(t: Tier, path: SagaPath) {
  const s = prepare(t, path);
  const h = await path.start(t, s);
  const out = await outcome(h, s.world);
  assert.equal(out.kind, 'completed', JSON.stringify(out));
  await s.world.quiet();
  const calls: PlannedCall[] = [];
  const counts = new Map<ActivityName, number>();
  let pending: { activity: ActivityName; nth: number }[] = [];
  for (const c of s.world.calls) {
    if (!isAuditActivity(c.activity)) {
      const nth = (counts.get(c.activity) ?? 0) + 1;
      counts.set(c.activity, nth);
      pending.push({ activity: c.activity, nth });
      // A write that records its own step's completion ends that step, as an audit write would.
      const carried = carriedAudit(c);
      if (carried) {
        calls.push(...pending.map((p) => ({ ...p, step: carried.step })));
        pending = [];
      }
      continue;
    }
    const rec = c.args[0] as { phase?: string; step?: string; status?: string };
    if (c.activity === 'auditStep' && rec.phase === 'forward' && rec.status === 'completed') {
      calls.push(...pending.map((p) => ({ ...p, step: rec.step! })));
      pending = [];
    }
  }
  assert.deepEqual(pending, [], 'no activity runs after the last step completes');
  const steps = s.world
    .audit(h.operationId)
    .map((e) => e.split(':'))
    .map(([phase, step, status]) => {
      assert.deepEqual(
        [phase, status],
        ['forward', 'completed'],
        'a clean run has only completed forward steps',
      );
      return step!;
    });
  return { subject: s, handle: h, result: out.result, calls, steps };
}
export type HappyRun = Awaited<ReturnType<typeof happyRun>>;

export { exportUri };
