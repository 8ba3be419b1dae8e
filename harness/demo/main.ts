// The main job (`./scripts/demo`): the seed's validation cycle for a VM with two disks, on the
// appliance lab, printing every stage; then the Temporal UI stays up until Ctrl-C.
import { open } from 'node:fs/promises';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { execa } from 'execa';
import { loadConfig } from '../../src/config/index.js';
import type { RowDataPacket } from 'mysql2/promise';
import { listExports as dbExports } from '../../src/db/exports.js';
import { listMappings } from '../../src/db/mappings.js';
import { engineExportNameOf } from '../../src/domain/device-names.js';
import { differences, engineMappingOf, isHeld } from '../../src/engine-contract/engine-view.js';
import { createEngineDatabase, engine, recordCreatedVolume, seedVm } from '../engine-db/index.js';
import { migrateUp } from '../../src/db/migrator.js';
import { createPool, dropDatabase, ensureDatabase } from '../../src/db/pool.js';
import { startLabStack, type LabStack } from '../lab/stack.js';

// Ctrl-C is ours to handle (stop, below), in order: the SDK's own signal handlers would start
// shutting the workers down underneath it.
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
const cfg = { ...loadConfig(), DB_NAME: 'volume_lifecycle_demo' };
const uiPort = Number(cfg.TEMPORAL_ADDRESS.split(':').pop()) + 1000;
const say = (stage: string, text: string) => console.log(`\x1b[1m${stage.padEnd(12)}\x1b[0m ${text}`);

async function nbdRead(s: LabStack, exportName: string, pattern: string, length: string): Promise<string> {
  const r = await execa(
    'qemu-io',
    ['-f', 'raw', s.nbdUri(exportName), '-c', `read -P ${pattern} 0 ${length}`],
    { reject: false },
  );
  const out = `${r.stdout}\n${r.stderr}`;
  if (/read \d+\/\d+ bytes/.test(out) && !/Pattern verification failed/.test(out))
    return `reads ${pattern} ✓`;
  if (/Input\/output error/.test(out)) return 'I/O error (no stale data) ✓';
  return `unexpected: ${out.trim().split('\n').pop()}`;
}

/** Ours beside the migration engine's, for each volume we hold: the engine's rows must follow ours. */
async function showEngineView(s: LabStack): Promise<void> {
  const ours = await listMappings(s.db.pool);
  const [dms] = await engineDb.pool.query<RowDataPacket[]>('SELECT * FROM device_mappings');
  const [nes] = await engineDb.pool.query<RowDataPacket[]>('SELECT * FROM nbd_exports');
  const exportRows = new Map((await dbExports(s.db.pool)).map((e) => [e.volumeId, e]));
  for (const m of ours) {
    const dm = dms.find((r) => r.volume_uuid === m.volumeId);
    const ne = nes.filter((r) => r.volume_id === m.volumeId).map((r) => String(r.export_name));
    const held = isHeld(m, exportRows.has(m.volumeId));
    const follows = held && dm ? differences(dm, engineMappingOf(m)).length === 0 : !held && !dm;
    const key = ne[0] ? await engine.diskKeyOf(engineDb.pool, ne[0]) : undefined;
    say(
      '',
      `ours: ${m.persistentName} ${m.location.padEnd(8)} | engine: ${dm ? `${String(dm.device_path)} (${String(dm.cloudstack_state)}, ${String(dm.operation_mode)})` : 'no mapping row'}, ` +
        `export ${ne.join(', ') || 'none'}${key ? ` → VMware disk ${key}` : ''} ${follows ? '✓' : '✗ DIFFERS'}`,
    );
    if (!follows) throw new Error(`the engine's rows of ${m.volumeId} do not follow ours`);
  }
}

async function show(s: LabStack, stage: string): Promise<void> {
  const served = await s.servedExports();
  // Each export under both names: the persistent one, and the one the engine parses.
  const recorded = (await dbExports(s.db.pool))
    .flatMap((e) => [e.exportName, engineExportNameOf(e.volumeId)])
    .sort();
  const same = JSON.stringify(served) === JSON.stringify(recorded);
  say(
    '',
    `NBD server lists [${served.join(', ')}] — ${same ? 'equals the database ✓' : `DATABASE SAYS [${recorded.join(', ')}] ✗`}`,
  );
  for (const name of await s.dmNames()) say('', `dmsetup table ${name}: ${await s.dmTable(name)}`);
  if (!same) throw new Error(`${stage}: NBD server and database disagree`);
  await showEngineView(s);
}

console.log('volume-lifecycle demo: the appliance is a QEMU guest with a real kernel, dm and nbdkit;');
console.log('CloudStack is the simulator, hot-plugging virtio disks with KVM serials.\n');
await dropDatabase(cfg);
await ensureDatabase(cfg);
const pool = createPool(cfg);
await migrateUp(pool);
// The migration engine's database beside ours (ENGINE_DB_NAME), as on an appliance it shares.
const engineCfg = { ...cfg, DB_NAME: 'volume_lifecycle_demo_engine' };
await dropDatabase(engineCfg);
const engineDb = await createEngineDatabase(engineCfg.DB_NAME, { nbdPort: cfg.NBD_PORT });
say('start', 'booting the appliance lab and the workers …');
const t0 = Date.now();
const s = await startLabStack({
  db: { pool, close: () => pool.end() },
  tag: 'demo',
  jobDurationMs: 300,
  engine: engineDb.rows,
});
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log('\nstopping: workers, lab VM, simulator …');
  await s.close();
  await engineDb.pool.end();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
say('ready', `lab booted in ${s.lab.bootMs} ms, stack ready in ${Date.now() - t0} ms`);

const base = { applianceVmId: s.applianceVmId };
const vm = 'pgtest3';
const vols = [await s.createVolume(1), await s.createVolume(1)];
// The engine's own rows of the migration: the VM, its disks 2000 and 2001, and their volumes.
const engineVm = await seedVm(engineDb.pool, vm, [2000, 2001]);
for (const [i, v] of vols.entries())
  await recordCreatedVolume(engineDb.pool, engineVm, 2000 + i, v, `migration-${vm}-${vm}-disk-${i}`);
const access = [];
for (const [i, volumeId] of vols.entries()) {
  const r = await (
    await s.volumes.attach({ ...base, volumeId, sourceVmName: vm, diskKey: 2000 + i })
  ).result();
  access.push(r.access!);
  say(
    'attach',
    `${vm} disk ${i}: volume ${volumeId} → ${r.access!.devicePath} → ${r.access!.mapperPath} → export ${r.access!.exportName}`,
  );
}
await show(s, 'attach');
// As the engine does after provisioning: each export's VM disk, from the export name it read.
const exportNames = vols.map((v) => engineExportNameOf(v));
await engine.correlateExports(engineDb.pool, engineVm.contextId, exportNames);
say(
  'engine',
  `maps ${exportNames.join(', ')} to VMware disks ${(await engine.diskKeys(engineDb.pool, exportNames)).join(', ')}`,
);
for (const a of access) {
  await execa('qemu-io', ['-f', 'raw', s.nbdUri(a.exportName), '-c', 'write -P 0xa5 0 1M']);
  say(
    'replicate',
    `wrote 1 MiB of 0xa5 through ${a.exportName}: ${await nbdRead(s, a.exportName, '0xa5', '1M')}`,
  );
}
await (await s.volumes.failover({ ...base, volumeId: vols[0]!, targetVmId: s.targetVmId })).result();
say(
  'failover',
  `${access[0]!.persistentName} → migrated VM ${s.targetVmId}; export ${access[0]!.exportName}: ${await nbdRead(s, access[0]!.exportName, '0xa5', '4k')}`,
);
await show(s, 'failover');
const other = await s.createVolume(1);
const o = await (
  await s.volumes.attach({ ...base, volumeId: other, sourceVmName: 'pg-test3', diskKey: 2000 })
).result();
say(
  'attach',
  `another VM, pg-test3 disk 0 → ${o.access!.devicePath} → ${o.access!.persistentName} (no collision with pgtest3)`,
);
const fh = await open(s.imagePath(vols[0]!), 'r+');
await fh.write(Buffer.alloc(65536, 0xcd), 0, 65536, 0);
await fh.close();
say('target VM', 'the migrated VM wrote 64 KiB of 0xcd into the volume');
const back = await (await s.volumes.failback({ ...base, volumeId: vols[0]! })).result();
say(
  'failback',
  `${back.access!.persistentName}: ${access[0]!.devicePath} before, ${back.access!.devicePath} now; export ${back.access!.exportName}: ${await nbdRead(s, back.access!.exportName, '0xcd', '64k')}`,
);
await show(s, 'failback');
const again = await (
  await s.volumes.attach({ ...base, volumeId: vols[0]!, sourceVmName: vm, diskKey: 2000 })
).result();
say(
  'attach',
  `replication resumes on ${again.access!.exportName} (${s.nbdUri(again.access!.exportName)} from this machine)`,
);
for (const volumeId of [...vols, other]) await (await s.volumes.delete({ ...base, volumeId })).result();
say('delete', 'all three volumes deleted: exports, dm devices, rows and CloudStack volumes gone');
await show(s, 'delete');
say('done', `cycle finished in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
console.log(
  `\nTemporal UI: http://127.0.0.1:${uiPort}/namespaces/default/workflows?query=${encodeURIComponent(`ApplianceVmId = "${s.applianceVmId}"`)}`,
);
if (process.env.DEMO_EXIT === '1') await stop();
else console.log('Press Ctrl-C to stop everything (the Temporal dev server keeps its history in .data/).');
