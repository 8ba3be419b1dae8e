// Benchmark: the price of durability (attach saga vs. the same steps called directly) and
// throughput of concurrent attach sagas on the Temporal dev server.
//
//   TEMPORAL_ADDRESS=127.0.0.1:7244 node --import tsx bench/sagas.ts [overheadRuns=100] [levels=10,100,500]
//   (or BENCH_OVERHEAD_RUNS / BENCH_LEVELS; overheadRuns 0 skips the overhead part)
//   --quick (npm run bench:sagas -- --quick): 100 interleaved runs and N=100 only, about a minute.
//   (100 runs, not 20: with 20 the p50s of two runs back to back differed by up to 0.1 in the ratio.)
//
// The floor: the same shape of no-op activities (the attach saga's remote activities per queue,
// local activities and upserts, per workflow task, read from its own history) run as a workflow
// on the same server in the same run — what the engine costs for that shape, with no work done.
// Actions: per saga type, what one run spends (remote and local activities, workflow tasks,
// upserts, history events), counted from its history.
//   BENCH_DISKS_PER_APPLIANCE=32: spread each level over ceil(N/32) appliances (CloudStack KVM's
//   default max_data_volumes_limit), one host worker each. Default 0: every volume of a level on
//   ONE appliance (one host worker, one host lock), with the simulator's per-VM data-disk limit
//   lifted to let that happen — the worst case for the appliance side.
//
// Every level starts on fresh appliance(s) (empty sysfs tree, no dm devices), so a level does not
// inherit the devices of the one before. The N volumes of a level belong to N/5 source VMs (5
// disks each: distinct persistent names), all attach requests are started at once, and the level
// ends when every saga has ended. "RSS" is this whole process: both workers, the Temporal client,
// the CloudStack simulator and the stand-ins.
//
// After each level a sample of workflow histories is read to show where the time goes: how long
// activity and workflow tasks waited in their task queue (scheduled → started) and ran (started →
// completed), per queue.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import {
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type ActivityInterceptorsFactory,
} from '@temporalio/worker';
import { createControlActivities } from '../activities/control/index.js';
import { createHostActivities } from '../activities/host/index.js';
import { VolumeLifecycleClient } from '../src/client/index.js';
import { CloudStackClient } from '../src/cloudstack/client.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import type { StepAudit } from '../src/db/operations.js';
import { exportNameOf, mapperPathOf } from '../src/domain/device-names.js';
import { startSimulator } from '../harness/cloudstack-sim/index.js';
import { loadConfig } from '../src/config/index.js';
import { SysfsCorrelator } from '../src/device/correlation.js';
import { DeviceMapper } from '../src/device/devicemapper.js';
import { migrateUp } from '../src/db/migrator.js';
import { createPool, dropDatabase, ensureDatabase } from '../src/db/pool.js';
import { NbdkitDirBackend } from '../src/nbd/nbdkit-dir.js';
import { connectClient } from '../src/temporal/connection.js';
import { createControlWorker, createHostWorker } from '../src/worker/workers.js';
import { MemoryDmRunner, SysfsTreeHypervisor } from '../test/support/host-stand-in.js';
import {
  countActions,
  millis,
  shapeOf,
  taskTimeline,
  type ActionCount,
  type TaskTime,
} from './floor/shape.js';
import type { floorWorkflow, Shape } from './floor/workflows.js';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
const args = process.argv.slice(2).filter((a) => a !== '--quick');
const overheadRuns = Number(args[0] ?? process.env.BENCH_OVERHEAD_RUNS ?? 100);
const levels = (args[1] ?? process.env.BENCH_LEVELS ?? (quick ? '100' : '10,100,500')).split(',').map(Number);
const disksPerAppliance = Number(process.env.BENCH_DISKS_PER_APPLIANCE ?? 0);
const HISTORY_SAMPLE = Number(process.env.BENCH_HISTORY_SAMPLE ?? 50);
const CONTROL_MAX_CONCURRENT = 500;
const DB_POOL_SIZE = 50;

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const mb = (n: number) => (n / 2 ** 20).toFixed(0);
const ms = (n: number, digits = 0) => (Number.isNaN(n) ? '—' : n.toFixed(digits));

const cfg = {
  ...loadConfig(),
  DB_NAME: `vl_bench_${randomBytes(3).toString('hex')}`,
  DB_POOL_SIZE,
};
await ensureDatabase(cfg);
const pool = createPool(cfg);
await migrateUp(pool);
const tmp = await mkdtemp(path.join(os.tmpdir(), 'vl-bench-'));
const hypervisors = new Map<string, SysfsTreeHypervisor>();
const sim = await startSimulator({
  jobDurationMs: 0,
  hypervisorFor: (vm) => hypervisors.get(vm),
});
// CloudStack/KVM allows 32 data disks per VM by default; one appliance holding a whole level of
// 500 is only possible with the limit raised (hypervisor_capabilities.max_data_volumes_limit).
sim.sim.state.maxDataVolumes = disksPerAppliance > 0 ? Math.max(32, disksPerAppliance) : 100_000;
const cs = new CloudStackClient({
  url: sim.sim.url,
  apiKey: sim.sim.apiKey,
  secretKey: sim.sim.secretKey,
  pollInitialMs: 5,
  pollMaxMs: 50,
});
const prefix = `bench-${randomBytes(3).toString('hex')}`;
const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
const connection = await NativeConnection.connect({ address });
/**
 * Time spent inside activity functions, per activity type, while `recording` is set: the steps'
 * own work as the saga's workers ran it (in the same process as everything else, so contention
 * shows here, not in the remainder).
 */
const activityTime = { recording: false, run: 0, byType: new Map<string, number[]>() };
const timeActivities: ActivityInterceptorsFactory = (ctx) => ({
  inbound: {
    async execute(input, next) {
      const t = performance.now();
      try {
        return await next(input);
      } finally {
        if (activityTime.recording) {
          const type = ctx.info.activityType;
          const took = performance.now() - t;
          activityTime.run += took;
          const times = activityTime.byType.get(type);
          if (times) times.push(took);
          else activityTime.byType.set(type, [took]);
        }
      }
    },
  },
});
const control = await createControlWorker({
  connection,
  namespace: 'default',
  taskQueuePrefix: prefix,
  cloudstack: cs,
  db: pool,
  maxConcurrent: CONTROL_MAX_CONCURRENT,
  activityInterceptors: [timeActivities],
});
const controlRun = control.run();

// The floor's workers: no-op activities on a control-like and a host-like queue of their own.
const floorQueues = { controlQueue: `${prefix}-floor`, hostQueue: `${prefix}-floor-host-x` };
const noop = { noop: async () => {} };
const floorControl = await Worker.create({
  connection,
  namespace: 'default',
  taskQueue: floorQueues.controlQueue,
  workflowsPath: new URL('./floor/workflows.ts', import.meta.url).pathname,
  activities: noop,
});
const floorHost = await Worker.create({
  connection,
  namespace: 'default',
  taskQueue: floorQueues.hostQueue,
  activities: noop,
});
const floorRuns = [floorControl.run(), floorHost.run()];

/** One appliance: a VM in the simulator, its sysfs tree, stand-in dm, export dir and host worker. */
interface Appliance {
  id: string;
  deps: Parameters<typeof createHostActivities>[0];
  worker: Worker;
  running: Promise<void>;
  dir: string;
}
async function startAppliance(tag: string): Promise<Appliance> {
  const id = randomUUID();
  sim.sim.state.addVm({ name: `appliance-${tag}`, zoneid: sim.zone.id, id });
  const dir = await mkdtemp(path.join(tmp, `${tag}-`));
  const sys = path.join(dir, 'sys');
  await mkdir(path.join(sys, 'block'), { recursive: true });
  await mkdir(path.join(dir, 'dev'), { recursive: true });
  // One hypervisor instance per appliance, so device letters stay unique.
  hypervisors.set(id, new SysfsTreeHypervisor(sys));
  const deps = {
    correlator: new SysfsCorrelator({ sysfsRoot: sys, devRoot: path.join(dir, 'dev'), pollMs: 10 }),
    dm: new DeviceMapper({ runner: new MemoryDmRunner(sys) }),
    exports: new NbdkitDirBackend({
      exportsDir: path.join(dir, 'exports'),
      host: '127.0.0.1',
      port: 10809,
    }),
  };
  const worker = await createHostWorker({
    connection,
    namespace: 'default',
    taskQueuePrefix: prefix,
    applianceVmId: id,
    ...deps,
    activityInterceptors: [timeActivities],
  });
  return { id, deps, worker, running: worker.run(), dir };
}
async function stopAppliance(a: Appliance): Promise<void> {
  a.worker.shutdown();
  await a.running;
  hypervisors.delete(a.id);
  await rm(a.dir, { recursive: true, force: true });
}

const { client, connection: cc } = await connectClient({
  TEMPORAL_ADDRESS: address,
  TEMPORAL_NAMESPACE: 'default',
});
const volumes = new VolumeLifecycleClient({ client, taskQueuePrefix: prefix, correlationTimeoutMs: 10_000 });
const newVolume = async () =>
  (await cs.createVolume({ name: 'b', sizeGb: 1, diskOfferingId: sim.offering.id, zoneId: sim.zone.id })).id;

const main = await startAppliance('overhead');
const applianceVmId = main.id;
const deps = main.deps;

// The attach steps called directly, in one process, with the same activity functions.
const ctl = createControlActivities({ cloudstack: cs, db: pool });
const hst = createHostActivities(deps);
let directActivityMs = 0;
async function directAttach(volumeId: string, vm: string, disk: number): Promise<void> {
  const operationId = randomUUID();
  // A fresh activity context per attach, as a worker gives each activity its own (a shared one
  // collects csAttach's abort listeners: MaxListenersExceededWarning after 10 attaches).
  const env = new MockActivityEnvironment();
  const run = async <A extends unknown[], R>(fn: (...a: A) => Promise<R>, ...a: A): Promise<R> => {
    const t = performance.now();
    try {
      return (await env.run(fn, ...a)) as R;
    } finally {
      directActivityMs += performance.now() - t;
    }
  };
  const now = () => new Date().toISOString();
  await run(ctl.auditOperationStart, {
    operationId,
    workflowId: `direct:${volumeId}`,
    runId: operationId,
    type: 'attach',
    volumeId,
    vmId: null,
    request: {},
  });
  let seq = 0;
  const step = async <R>(name: string, f: () => Promise<R>) => {
    const startedAt = now();
    const r = await f();
    await run(ctl.auditStep, {
      operationId,
      seq: ++seq,
      step: name,
      phase: 'forward',
      status: 'completed',
      startedAt,
      finishedAt: now(),
    });
    return r;
  };
  // A step that ends in a database write has that write record it, as the saga's writeStep does.
  const writeStep = <R>(name: string, f: (audit: StepAudit) => Promise<R>) =>
    f({ operationId, seq: ++seq, step: name, startedAt: now() });
  const vol = (await step('validate', () => run(ctl.csGetVolume, volumeId)))!;
  const { mapping } = await writeStep('assign-name', (audit) =>
    run(ctl.dbAssignName, {
      volumeId,
      sourceVmName: vm,
      diskIndex: disk,
      applianceVmId,
      virtioSerial: diskSerialFor(volumeId),
      sizeBytes: vol.sizeBytes,
      operationId,
      audit,
    }),
  );
  const before = await run(hst.hostListDevices);
  await step('cloudstack-attach', () => run(ctl.csAttach, { volumeId, vmId: applianceVmId }));
  const dev = await step('correlate', () =>
    run(hst.hostCorrelate, {
      serial: diskSerialFor(volumeId),
      expectedSizeBytes: vol.sizeBytes,
      devicesBefore: before,
      timeoutMs: 10_000,
    }),
  );
  const name = mapping.persistentName!;
  await writeStep('resolve-conflicts', async (audit) => [
    await run(hst.hostResolveConflicts, { name, devicePath: dev.devicePath }),
    await run(ctl.dbClearStaleDevicePath, { devicePath: dev.devicePath, exceptVolumeId: volumeId, audit }),
  ]);
  const exportName = exportNameOf(name);
  await run(hst.hostVolumeState, { name, exportName });
  await step('dm-map', () => run(hst.hostDmEnsureLinear, { name, devicePath: dev.devicePath }));
  const m = (await run(ctl.dbGetMapping, volumeId))!;
  await writeStep('record-mapping', (audit) =>
    run(ctl.dbUpdateMapping, {
      volumeId,
      expectedVersion: m.version,
      operationId,
      patch: { location: 'appliance', targetVmId: null, devicePath: dev.devicePath, dmState: 'linear' },
      audit,
    }),
  );
  await run(ctl.dbGetExport, volumeId);
  await writeStep('ensure-export', async (audit) => {
    const r = await run(hst.hostExportEnsure, { exportName, targetPath: mapperPathOf(name) });
    await run(ctl.dbUpsertExport, {
      exportName,
      volumeId,
      targetPath: mapperPathOf(name),
      configPath: r.configPath,
      backend: r.backend,
      status: 'active',
      audit,
    });
  });
  await run(ctl.auditOperationStatus, { operationId, status: 'completed', finished: true });
}

/** Where the time of some workflows went, from their histories. */
async function queueBreakdown(temporal: Client, ids: { workflowId: string; runId: string }[]) {
  const wait = { control: [] as number[], host: [] as number[], workflow: [] as number[] };
  const run = { control: [] as number[], host: [] as number[], workflow: [] as number[] };
  for (const id of ids) {
    const h = await temporal.workflow.getHandle(id.workflowId, id.runId).fetchHistory();
    const at = new Map<number, { time: number; queue?: 'control' | 'host' }>();
    for (const e of h.events ?? []) {
      const eid = Number(String(e.eventId));
      const time = millis(e.eventTime);
      if (e.activityTaskScheduledEventAttributes) {
        const q = e.activityTaskScheduledEventAttributes.taskQueue?.name ?? '';
        at.set(eid, { time, queue: q.includes('-host-') ? 'host' : 'control' });
      } else if (e.activityTaskStartedEventAttributes) {
        const s = at.get(Number(String(e.activityTaskStartedEventAttributes.scheduledEventId)));
        if (s?.queue) wait[s.queue].push(time - s.time);
        at.set(eid, { time, queue: s?.queue });
      } else if (e.activityTaskCompletedEventAttributes) {
        const s = at.get(Number(String(e.activityTaskCompletedEventAttributes.startedEventId)));
        if (s?.queue) run[s.queue].push(time - s.time);
      } else if (e.workflowTaskScheduledEventAttributes) {
        at.set(eid, { time });
      } else if (e.workflowTaskStartedEventAttributes) {
        const s = at.get(Number(String(e.workflowTaskStartedEventAttributes.scheduledEventId)));
        if (s) wait.workflow.push(time - s.time);
        at.set(eid, { time });
      } else if (e.workflowTaskCompletedEventAttributes) {
        const s = at.get(Number(String(e.workflowTaskCompletedEventAttributes.startedEventId)));
        if (s) run.workflow.push(time - s.time);
      }
    }
  }
  return { wait, run };
}

console.log(
  `# volume-lifecycle saga benchmark — ${new Date().toISOString()}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, load avg ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}`,
);
console.log(
  '# CloudStack simulator with 0 ms jobs; correlation over a prepared sysfs tree; dmsetup answered by an in-memory stand-in (no dm on this host kernel); real MariaDB and Temporal dev server',
);
console.log(
  `# control worker: maxConcurrentActivityTaskExecutions ${CONTROL_MAX_CONCURRENT}, DB pool ${DB_POOL_SIZE}; host worker(s) as in src/worker/workers.ts\n`,
);

// Warm-up (bundle, connections, JIT), not counted.
for (let i = 0; i < (overheadRuns > 0 ? 3 : 1); i++) {
  await (
    await volumes.attach({
      applianceVmId,
      volumeId: await newVolume(),
      sourceVmName: `warm${i}`,
      diskKey: 2000,
    })
  ).result();
  if (overheadRuns > 0) await directAttach(await newVolume(), `warmd${i}`, 0);
}
let floorLine = '';
const actions = new Map<string, ActionCount>();
const historyOf = async (h: { workflowId: string; runId: string }) =>
  (await client.workflow.getHandle(h.workflowId, h.runId).fetchHistory()).events ?? [];
if (overheadRuns > 0) {
  // The attach saga's shape, from one of its own histories.
  const probe = await volumes.attach({
    applianceVmId,
    volumeId: await newVolume(),
    sourceVmName: 'shape',
    diskKey: 2000,
  });
  await probe.result();
  const attachEvents = await historyOf(probe);
  actions.set('attach', countActions(attachEvents));
  const shape: Shape = shapeOf(attachEvents, floorQueues);
  const runFloor = async (i: number) => {
    const h = await client.workflow.start<typeof floorWorkflow>('floorWorkflow', {
      workflowId: `floor-${prefix}-${i}`,
      taskQueue: floorQueues.controlQueue,
      args: [shape],
    });
    await h.result();
    return { workflowId: h.workflowId, runId: h.firstExecutionRunId };
  };
  await runFloor(-1); // warm-up
  type Run = { workflowId: string; runId: string };
  const ran = { saga: [] as Run[], floor: [] as Run[] };
  const sagaMs: number[] = [];
  const directMs: number[] = [];
  const floorMs: number[] = [];
  const sagaWorkMs: number[] = [];
  const directWorkMs: number[] = [];
  for (let i = 0; i < overheadRuns; i++) {
    // Interleaved, so all three see the same machine state.
    let v = await newVolume();
    let t = performance.now();
    directActivityMs = 0;
    await directAttach(v, `direct${i}`, 0);
    directMs.push(performance.now() - t);
    directWorkMs.push(directActivityMs);
    v = await newVolume();
    activityTime.run = 0;
    activityTime.recording = true;
    t = performance.now();
    const saga = await volumes.attach({
      applianceVmId,
      volumeId: v,
      sourceVmName: `saga${i}`,
      diskKey: 2000,
    });
    await saga.result();
    sagaMs.push(performance.now() - t);
    activityTime.recording = false;
    sagaWorkMs.push(activityTime.run);
    ran.saga.push(saga);
    t = performance.now();
    ran.floor.push(await runFloor(i));
    floorMs.push(performance.now() - t);
  }
  console.log(`attach, ${overheadRuns} runs each, interleaved:`);
  console.log(
    `  direct calls   p50 ${pct(directMs, 50).toFixed(1)} ms   p95 ${pct(directMs, 95).toFixed(1)} ms`,
  );
  console.log(`  Temporal saga  p50 ${pct(sagaMs, 50).toFixed(1)} ms   p95 ${pct(sagaMs, 95).toFixed(1)} ms`);
  console.log(
    `  floor          p50 ${pct(floorMs, 50).toFixed(1)} ms   p95 ${pct(floorMs, 95).toFixed(1)} ms`,
  );
  console.log(
    `  ratio (p50)    saga/direct ${(pct(sagaMs, 50) / pct(directMs, 50)).toFixed(2)}×, saga/floor ${(pct(sagaMs, 50) / pct(floorMs, 50)).toFixed(2)}×\n`,
  );
  // What the saga adds to its floor: the steps' own work (time inside activity functions, as the
  // saga's workers ran them) and the rest (our workflow code, payloads, the SDK's per-promise
  // bookkeeping for our deeper call stacks). With no rest at all the ratio would be the bound.
  const work = pct(sagaWorkMs, 50);
  console.log(
    `  the steps' own work p50: ${work.toFixed(1)} ms inside the saga's activities, ${pct(directWorkMs, 50).toFixed(1)} ms called directly`,
  );
  console.log(
    `  saga − floor − work: ${(pct(sagaMs, 50) - pct(floorMs, 50) - work).toFixed(1)} ms; ` +
      `ratio with none of that, (floor + work) / floor: ${((pct(floorMs, 50) + work) / pct(floorMs, 50)).toFixed(2)}×`,
  );
  console.log('  per activity type, p50 ms inside the saga (× calls per saga):');
  for (const [type, xs] of activityTime.byType)
    console.log(
      `    ${type.padEnd(24)} ${pct(xs, 50).toFixed(2)} × ${(xs.length / overheadRuns).toFixed(0)}`,
    );
  console.log('');
  // Where the difference is: per workflow task, median times of saga and floor (from histories).
  const timelines = async (runs: Run[]) =>
    Promise.all(runs.map(async (r) => taskTimeline(await historyOf(r))));
  const [sagaTasks, floorTasks] = [await timelines(ran.saga), await timelines(ran.floor)];
  const med = (ts: TaskTime[][], k: number, f: keyof TaskTime) =>
    pct(
      ts.flatMap((t) => (t[k] ? [t[k][f]] : [])),
      50,
    );
  console.log('per workflow task, p50 ms, saga | floor (before: waiting for its activities; queued; ran):');
  for (let k = 0; k < Math.max(sagaTasks[0]?.length ?? 0, floorTasks[0]?.length ?? 0); k++)
    console.log(
      `  task ${k + 1}: before ${ms(med(sagaTasks, k, 'before'), 1)} | ${ms(med(floorTasks, k, 'before'), 1)}, ` +
        `queued ${ms(med(sagaTasks, k, 'queued'), 1)} | ${ms(med(floorTasks, k, 'queued'), 1)}, ` +
        `ran ${ms(med(sagaTasks, k, 'ran'), 1)} | ${ms(med(floorTasks, k, 'ran'), 1)}`,
    );
  console.log('');
  floorLine =
    `attach saga p50 ${pct(sagaMs, 50).toFixed(0)} ms, floor p50 ${pct(floorMs, 50).toFixed(0)} ms ` +
    `(same shape of no-op activities, same server, same run), ratio ${(pct(sagaMs, 50) / pct(floorMs, 50)).toFixed(2)}`;

  // One run of each other saga, on one volume, for its action count.
  const v = await newVolume();
  await (
    await volumes.attach({ applianceVmId, volumeId: v, sourceVmName: 'counted', diskKey: 2000 })
  ).result();
  const targetVmId = sim.targets[0]!.id;
  for (const [type, start] of [
    ['failover', () => volumes.failover({ applianceVmId, volumeId: v, targetVmId })],
    ['failback', () => volumes.failback({ applianceVmId, volumeId: v })],
    ['detach', () => volumes.detach({ applianceVmId, volumeId: v })],
    ['delete', () => volumes.delete({ applianceVmId, volumeId: v })],
  ] as const) {
    const h = await start();
    await h.result();
    actions.set(type, countActions(await historyOf(h)));
  }
  console.log('actions per saga run (from its history; what a Temporal cluster spends, and Cloud bills):\n');
  console.log('| saga | remote activities | local activities | workflow tasks | upserts | history events |');
  console.log('|------|------------------:|-----------------:|---------------:|--------:|---------------:|');
  for (const [type, a] of actions)
    console.log(
      `| ${type} | ${a.remoteActivities} | ${a.localActivities} | ${a.workflowTasks} | ${a.upserts} | ${a.events} |`,
    );
  console.log('');
}
await stopAppliance(main);

interface Row {
  n: number;
  appliances: number;
  secs: number;
  lat: number[];
  failures: number;
  failureKinds: Map<string, number>;
  rssBase: number;
  rssPeak: number;
  heapPeak: number;
  breakdown: Awaited<ReturnType<typeof queueBreakdown>>;
}
const rows: Row[] = [];
for (const [li, n] of levels.entries()) {
  const count = disksPerAppliance > 0 ? Math.ceil(n / disksPerAppliance) : 1;
  const apps = await Promise.all(Array.from({ length: count }, (_, k) => startAppliance(`n${n}-${k}`)));
  const vols = await Promise.all(Array.from({ length: n }, () => newVolume()));
  const lat: number[] = [];
  const failureKinds = new Map<string, number>();
  const started: { workflowId: string; runId: string }[] = [];
  let failures = 0;
  global.gc?.();
  const rssBase = process.memoryUsage().rss;
  let rssPeak = rssBase;
  let heapPeak = process.memoryUsage().heapUsed;
  const mem = setInterval(() => {
    const m = process.memoryUsage();
    rssPeak = Math.max(rssPeak, m.rss);
    heapPeak = Math.max(heapPeak, m.heapUsed);
  }, 100);
  const t0 = performance.now();
  await Promise.all(
    vols.map(async (volumeId, i) => {
      const t = performance.now();
      try {
        const h = await volumes.attach({
          applianceVmId: apps[i % count]!.id,
          volumeId,
          sourceVmName: `l${li}n${n}vm${Math.floor(i / 5)}`,
          diskKey: 2000 + (i % 5),
        });
        started.push({ workflowId: h.workflowId, runId: h.runId });
        await h.result();
        lat.push(performance.now() - t);
      } catch (err) {
        failures++;
        // The saga's own error is the cause of WorkflowFailedError (and its cause, the step's).
        const chain: string[] = [];
        for (let e: unknown = err; e instanceof Error && chain.length < 4; e = e.cause)
          chain.push(e.message.split('\n')[0]!.slice(0, 120));
        const kind = chain.join(' ← ');
        failureKinds.set(kind, (failureKinds.get(kind) ?? 0) + 1);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  clearInterval(mem);
  const sample = started.filter((_, i) => i % Math.max(1, Math.floor(started.length / HISTORY_SAMPLE)) === 0);
  const breakdown = await queueBreakdown(client, sample.slice(0, HISTORY_SAMPLE));
  rows.push({
    n,
    appliances: count,
    secs,
    lat,
    failures,
    failureKinds,
    rssBase,
    rssPeak,
    heapPeak,
    breakdown,
  });
  console.log(
    `  N=${n}: ${lat.length} completed, ${failures} failed in ${secs.toFixed(1)} s on ${count} appliance(s)`,
  );
  for (const [kind, k] of failureKinds) console.log(`    ${k}× ${kind}`);
  await Promise.all(apps.map(stopAppliance));
}

const pad = (s: string, w: number) => s.padStart(w);
console.log(
  `\nconcurrent attach sagas (N volumes of N/5 source VMs, 5 disks each; ${disksPerAppliance > 0 ? `≤ ${disksPerAppliance} volumes per appliance` : 'all on one appliance'}):\n`,
);
console.log(
  '|    N | appliances | wall s | completed/s | p50 ms | p95 ms | max ms | failures | RSS before → peak MiB | heap peak MiB |',
);
console.log(
  '|-----:|-----------:|-------:|------------:|-------:|-------:|-------:|---------:|----------------------:|--------------:|',
);
for (const r of rows) {
  console.log(
    `| ${pad(String(r.n), 4)} | ${pad(String(r.appliances), 10)} | ${pad(r.secs.toFixed(1), 6)} | ${pad((r.lat.length / r.secs).toFixed(1), 11)} | ${pad(ms(pct(r.lat, 50)), 6)} | ${pad(ms(pct(r.lat, 95)), 6)} | ${pad(ms(r.lat.length ? Math.max(...r.lat) : NaN), 6)} | ${pad(String(r.failures), 8)} | ${pad(`${mb(r.rssBase)} → ${mb(r.rssPeak)}`, 21)} | ${pad(mb(r.heapPeak), 13)} |`,
  );
}
console.log(`\nwhere the time goes (from ${HISTORY_SAMPLE} sampled histories per level; ms, p50 / p95):\n`);
console.log(
  '|    N | workflow task: queued | ran | control activity: queued | ran | host activity: queued | ran |',
);
console.log(
  '|-----:|----------------------:|----:|-------------------------:|----:|----------------------:|----:|',
);
const pp = (xs: number[]) => `${ms(pct(xs, 50))} / ${ms(pct(xs, 95))}`;
for (const r of rows) {
  const { wait, run } = r.breakdown;
  console.log(
    `| ${pad(String(r.n), 4)} | ${pad(pp(wait.workflow), 21)} | ${pp(run.workflow)} | ${pad(pp(wait.control), 24)} | ${pp(run.control)} | ${pad(pp(wait.host), 21)} | ${pp(run.host)} |`,
  );
}

control.shutdown();
await controlRun;
floorControl.shutdown();
floorHost.shutdown();
await Promise.all(floorRuns);
await cc.close();
await connection.close();
await sim.sim.close();
await pool.end();
if (process.env.BENCH_KEEP_DB !== '1') await dropDatabase(cfg);
else console.log(`kept database ${cfg.DB_NAME}`);
await rm(tmp, { recursive: true, force: true });
// Last line: the figure the README quotes.
if (floorLine) console.log(floorLine);
