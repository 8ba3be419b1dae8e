// Benchmark: the price of durability (attach saga vs. the same steps called directly) and
// throughput of concurrent attach sagas on the Temporal dev server.
//   TEMPORAL_ADDRESS=127.0.0.1:7233 npx tsx bench/sagas.ts [overheadRuns=30] [concurrency list=10,100,500]
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { createControlActivities } from '../activities/control/index.js';
import { createHostActivities } from '../activities/host/index.js';
import { VolumeLifecycleClient } from '../src/client/index.js';
import { CloudStackClient } from '../src/cloudstack/client.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { startSimulator } from '../src/cloudstack-sim/index.js';
import { loadConfig } from '../src/config/index.js';
import { SysfsCorrelator } from '../src/device/correlation.js';
import { DeviceMapper } from '../src/device/devicemapper.js';
import { migrateUp } from '../src/db/migrator.js';
import { createPool, dropDatabase, ensureDatabase } from '../src/db/pool.js';
import { NbdkitDirBackend } from '../src/nbd/nbdkit-dir.js';
import { connectClient } from '../src/temporal/connection.js';
import { createControlWorker, createHostWorker } from '../src/worker/workers.js';
import { MemoryDmRunner, SysfsTreeHypervisor } from './host-stand-in.js';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const overheadRuns = Number(process.argv[2] ?? 30);
const levels = (process.argv[3] ?? '10,100,500').split(',').map(Number);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const mb = (n: number) => (n / 2 ** 20).toFixed(0);

const cfg = { ...loadConfig(), DB_NAME: `vl_bench_${randomBytes(3).toString('hex')}`, DB_POOL_SIZE: 50 };
await ensureDatabase(cfg);
const pool = createPool(cfg);
await migrateUp(pool);
const tmp = await mkdtemp(path.join(os.tmpdir(), 'vl-bench-'));
const sys = path.join(tmp, 'sys');
await mkdir(path.join(sys, 'block'), { recursive: true });
await mkdir(path.join(tmp, 'dev'), { recursive: true });
const applianceVmId = randomUUID();
// One hypervisor instance for the appliance, so device letters stay unique.
const hyper = new SysfsTreeHypervisor(sys);
const sim = await startSimulator({
  applianceVmId,
  jobDurationMs: 0,
  hypervisorFor: (vm) => (vm === applianceVmId ? hyper : undefined),
});
const cs = new CloudStackClient({
  url: sim.sim.url,
  apiKey: sim.sim.apiKey,
  secretKey: sim.sim.secretKey,
  pollInitialMs: 5,
  pollMaxMs: 50,
});
const deps = {
  correlator: new SysfsCorrelator({ sysfsRoot: sys, devRoot: path.join(tmp, 'dev'), pollMs: 10 }),
  dm: new DeviceMapper({ runner: new MemoryDmRunner(sys) }),
  exports: new NbdkitDirBackend({ exportsDir: path.join(tmp, 'exports'), host: '127.0.0.1', port: 10809 }),
};
const prefix = `bench-${randomBytes(3).toString('hex')}`;
const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
const connection = await NativeConnection.connect({ address });
const control = await createControlWorker({
  connection,
  namespace: 'default',
  taskQueuePrefix: prefix,
  cloudstack: cs,
  db: pool,
  maxConcurrent: 500,
});
const host = await createHostWorker({
  connection,
  namespace: 'default',
  taskQueuePrefix: prefix,
  applianceVmId,
  ...deps,
});
const runs = [control.run(), host.run()];
const { client, connection: cc } = await connectClient({
  TEMPORAL_ADDRESS: address,
  TEMPORAL_NAMESPACE: 'default',
});
const volumes = new VolumeLifecycleClient({ client, taskQueuePrefix: prefix, correlationTimeoutMs: 10_000 });
const newVolume = async () =>
  (await cs.createVolume({ name: 'b', sizeGb: 1, diskOfferingId: sim.offering.id, zoneId: sim.zone.id })).id;

// The attach steps called directly, in one process, with the same activity functions.
const ctl = createControlActivities({ cloudstack: cs, db: pool });
const hst = createHostActivities(deps);
const env = new MockActivityEnvironment();
async function directAttach(volumeId: string, vm: string, disk: number): Promise<void> {
  const operationId = randomUUID();
  const run = <A extends unknown[], R>(fn: (...a: A) => Promise<R>, ...a: A): Promise<R> =>
    env.run(fn, ...a) as Promise<R>;
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
  const vol = (await step('validate', () => run(ctl.csGetVolume, volumeId)))!;
  const { mapping } = await step('assign-name', () =>
    run(ctl.dbAssignName, {
      volumeId,
      sourceVmName: vm,
      diskIndex: disk,
      applianceVmId,
      virtioSerial: diskSerialFor(volumeId),
      sizeBytes: vol.sizeBytes,
      operationId,
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
  await step('resolve-conflicts', async () => [
    await run(hst.hostResolveConflicts, { name, devicePath: dev.devicePath }),
    await run(ctl.dbClearStaleDevicePath, { devicePath: dev.devicePath, exceptVolumeId: volumeId }),
  ]);
  await run(hst.hostDmTable, name);
  await step('dm-map', () => run(hst.hostDmEnsureLinear, { name, devicePath: dev.devicePath }));
  const m = (await run(ctl.dbGetMapping, volumeId))!;
  await step('record-mapping', () =>
    run(ctl.dbUpdateMapping, {
      volumeId,
      expectedVersion: m.version,
      operationId,
      patch: { location: 'appliance', targetVmId: null, devicePath: dev.devicePath, dmState: 'linear' },
    }),
  );
  const exportName = `migration-vol-${name}`;
  await run(hst.hostExportConfigured, exportName);
  await run(ctl.dbGetExport, volumeId);
  await step('ensure-export', async () => {
    const r = await run(hst.hostExportEnsure, { exportName, targetPath: `/dev/mapper/${name}` });
    await run(ctl.dbUpsertExport, {
      exportName,
      volumeId,
      targetPath: `/dev/mapper/${name}`,
      configPath: r.configPath,
      backend: r.backend,
      status: 'active',
    });
  });
  await run(ctl.auditOperationStatus, { operationId, status: 'completed', finished: true });
}

console.log(
  `# volume-lifecycle saga benchmark — ${new Date().toISOString()}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}`,
);
console.log(
  '# CloudStack simulator with 0 ms jobs; correlation over a prepared sysfs tree; dmsetup answered by an in-memory stand-in (no dm on this host kernel); real MariaDB and Temporal dev server\n',
);

// Warm-up (bundle, connections, JIT), not counted.
for (let i = 0; i < 3; i++) {
  await (
    await volumes.attach({
      applianceVmId,
      volumeId: await newVolume(),
      sourceVmName: `warm${i}`,
      diskKey: 2000,
    })
  ).result();
  await directAttach(await newVolume(), `warmd${i}`, 0);
}
const sagaMs: number[] = [];
const directMs: number[] = [];
for (let i = 0; i < overheadRuns; i++) {
  // Interleaved, so both sides see the same machine state.
  let v = await newVolume();
  let t = performance.now();
  await directAttach(v, `direct${i}`, 0);
  directMs.push(performance.now() - t);
  v = await newVolume();
  t = performance.now();
  await (
    await volumes.attach({ applianceVmId, volumeId: v, sourceVmName: `saga${i}`, diskKey: 2000 })
  ).result();
  sagaMs.push(performance.now() - t);
}
console.log(`attach, ${overheadRuns} runs each, interleaved:`);
console.log(
  `  direct calls   p50 ${pct(directMs, 50).toFixed(1)} ms   p95 ${pct(directMs, 95).toFixed(1)} ms`,
);
console.log(`  Temporal saga  p50 ${pct(sagaMs, 50).toFixed(1)} ms   p95 ${pct(sagaMs, 95).toFixed(1)} ms`);
console.log(
  `  ratio (p50)    ${(pct(sagaMs, 50) / pct(directMs, 50)).toFixed(2)}×   — the price of durability\n`,
);

console.log('concurrent attach sagas (distinct volumes across N/5 VMs, 5 disks each):');
for (const n of levels) {
  const vols = await Promise.all(Array.from({ length: n }, () => newVolume()));
  const lat: number[] = [];
  let failures = 0;
  let peakRss = process.memoryUsage().rss;
  const mem = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  const t0 = performance.now();
  await Promise.all(
    vols.map(async (volumeId, i) => {
      const t = performance.now();
      try {
        await (
          await volumes.attach({
            applianceVmId,
            volumeId,
            sourceVmName: `c${n}vm${Math.floor(i / 5)}`,
            diskKey: 2000 + (i % 5),
          })
        ).result();
        lat.push(performance.now() - t);
      } catch (err) {
        failures++;
        console.error(String(err));
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  clearInterval(mem);
  console.log(
    `  N=${String(n).padEnd(4)} ${(lat.length / secs).toFixed(1).padStart(6)} completed/s   p50 ${pct(lat, 50).toFixed(0)} ms   p95 ${pct(lat, 95).toFixed(0)} ms   failures ${failures}   worker RSS peak ${mb(peakRss)} MiB`,
  );
}

control.shutdown();
host.shutdown();
await Promise.all(runs);
await cc.close();
await connection.close();
await sim.sim.close();
await pool.end();
if (process.env.BENCH_KEEP_DB !== '1') await dropDatabase(cfg);
else console.log(`kept database ${cfg.DB_NAME}`);
await rm(tmp, { recursive: true, force: true });
