// What keeping the engine's rows costs each database write of a saga: the writes an attach makes
// (assign-name, record-mapping, ensure-export) and a detach's record-location, each with its
// step's audit row as in a saga, timed as the control activities run them, without and with the engine's database (ENGINE_DB_NAME),
// interleaved in one run against the same MariaDB. Prints medians (ms) and their ratio.
//   npm run bench:engine-rows -- [rounds=200]
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createControlActivities } from '../activities/control/index.js';
import type { CloudStackApi } from '../src/cloudstack/types.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { loadConfig } from '../src/config/index.js';
import { migrateUp } from '../src/db/migrator.js';
import { createPool, dropDatabase, ensureDatabase } from '../src/db/pool.js';
import { createEngineDatabase, recordCreatedVolume, seedVm } from '../harness/engine-db/index.js';
import { interleaved, median } from './interleaved.js';

const rounds = Number(process.argv[2] ?? 200);
const base = loadConfig();
const names = { ours: `vl_bench_ours_${process.pid}`, engine: `vl_bench_engine_${process.pid}` };
const oursCfg = { ...base, DB_NAME: names.ours, DB_POOL_SIZE: 5 };
await ensureDatabase(oursCfg);
const pool = createPool(oursCfg);
await migrateUp(pool);
const engineDb = await createEngineDatabase(names.engine);
const vm = await seedVm(engineDb.pool, 'benchvm', [2000]);
const APPLIANCE = randomUUID();
// Only the database steps run here: nothing calls CloudStack.
const cloudstack = {} as CloudStackApi;
const plain = createControlActivities({ cloudstack, db: pool });
const following = createControlActivities({ cloudstack, db: pool, engine: engineDb.rows });

let n = 0;
/** One volume through attach's and detach's writes; the time of the writes alone. */
async function cycle(acts: typeof plain): Promise<number> {
  const volumeId = randomUUID();
  const operationId = randomUUID();
  const disk = n++;
  await recordCreatedVolume(engineDb.pool, vm, 2000, volumeId, `migration-benchvm-benchvm-disk-${disk}`);
  // As in a saga: each write carries its step's audit row (one transaction either way).
  await acts.auditOperationStart({
    operationId,
    workflowId: `volume:${volumeId}`,
    runId: randomUUID(),
    type: 'attach',
    volumeId,
    vmId: null,
    request: {},
  });
  const audit = (seq: number, step: string) => ({
    operationId,
    seq,
    step,
    startedAt: new Date().toISOString(),
  });
  const t0 = performance.now();
  const { mapping } = await acts.dbAssignName({
    audit: audit(1, 'assign-name'),
    volumeId,
    sourceVmName: 'benchvm',
    diskIndex: disk,
    applianceVmId: APPLIANCE,
    virtioSerial: diskSerialFor(volumeId),
    sizeBytes: 2 ** 30,
    operationId,
  });
  const attached = await acts.dbUpdateMapping({
    audit: audit(2, 'record-mapping'),
    volumeId,
    expectedVersion: mapping.version,
    operationId,
    patch: {
      location: 'appliance',
      targetVmId: null,
      cloudstackDeviceId: 1,
      devicePath: '/dev/vdb',
      dmState: 'linear',
    },
  });
  const name = mapping.persistentName!;
  await acts.dbUpsertExport({
    audit: audit(3, 'ensure-export'),
    exportName: `migration-vol-${name}`,
    volumeId,
    targetPath: `/dev/mapper/${name}`,
    configPath: `/run/volume-lifecycle/exports/migration-vol-${name}`,
    backend: 'nbdkit-dir',
    status: 'active',
  });
  await acts.dbUpdateMapping({
    audit: audit(4, 'record-location'),
    volumeId,
    expectedVersion: attached.version,
    operationId,
    patch: {
      location: 'detached',
      targetVmId: null,
      cloudstackDeviceId: null,
      devicePath: null,
      dmState: 'error',
    },
  });
  return performance.now() - t0;
}

try {
  for (let i = 0; i < 10; i++) await Promise.all([cycle(plain), cycle(following)]); // warm up
  const times = await interleaved(
    { 'without engine rows': () => cycle(plain), 'with engine rows': () => cycle(following) },
    rounds,
  );
  const a = median(times['without engine rows']!);
  const b = median(times['with engine rows']!);
  console.log(
    `\n4 writes of a saga (assign-name, record-mapping, ensure-export, record-location), ${rounds} rounds interleaved:`,
  );
  console.log(`  without the engine's rows  p50 ${a.toFixed(2)} ms (${(a / 4).toFixed(2)} ms a write)`);
  console.log(`  with the engine's rows     p50 ${b.toFixed(2)} ms (${(b / 4).toFixed(2)} ms a write)`);
  console.log(`  ratio ${(b / a).toFixed(2)}x, +${((b - a) / 4).toFixed(2)} ms a write`);
} finally {
  await pool.end();
  await engineDb.close();
  await dropDatabase(oursCfg);
}
