// Benchmark: one reconcile comparison over 1,000 and 10,000 mappings — database read, CloudStack
// listing (simulator, paginated 500 a page as the real API) and the drift matrix.
//   npx tsx bench/reconcile.ts [sizes=1000,10000]
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createControlActivities } from '../activities/control/index.js';
import { CloudStackClient } from '../src/cloudstack/client.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { startSimulator } from '../harness/cloudstack-sim/index.js';
import { loadConfig } from '../src/config/index.js';
import { migrateUp } from '../src/db/migrator.js';
import { createPool, dropDatabase, ensureDatabase } from '../src/db/pool.js';
import type { Inventory } from '../src/reconcile/drift.js';
import { packInventory } from '../src/reconcile/inventory-codec.js';

const sizes = (process.argv[2] ?? '1000,10000').split(',').map(Number);
console.log(
  `# reconcile benchmark — ${new Date().toISOString()}, ${os.cpus().length} CPUs, node ${process.version}`,
);
for (const n of sizes) {
  const cfg = { ...loadConfig(), DB_NAME: `vl_bench_rec_${randomBytes(3).toString('hex')}` };
  await ensureDatabase(cfg);
  const pool = createPool(cfg);
  await migrateUp(pool);
  const applianceVmId = randomUUID();
  const { sim, zone } = await startSimulator({ applianceVmId });
  const inventory: Inventory = { dm: [], devices: [], exportsConfigured: [], exportsServed: [] };
  const rows: unknown[][] = [];
  for (let i = 0; i < n; i++) {
    const v = sim.state.addVolume({
      name: `v${i}`,
      size: 2 ** 30,
      zoneid: zone.id,
      state: 'Ready',
      vmId: applianceVmId,
      deviceId: i + 4,
    });
    const name = `vm${Math.floor(i / 16)}disk${i % 16}`;
    const dev = `vd${i}`;
    rows.push([
      v.id,
      `vm${Math.floor(i / 16)}`,
      i % 16,
      applianceVmId,
      'appliance',
      `/dev/${dev}`,
      diskSerialFor(v.id),
      2 ** 30,
      name,
      `/dev/mapper/${name}`,
      'linear',
    ]);
    // In sync, except every 100th volume: its dm device is missing (drift to find).
    if (i % 100 !== 0)
      inventory.dm.push({
        name,
        table: { kind: 'linear', sectors: 2 ** 21, device: `254:${i}`, offset: 0 },
        openCount: 0,
        uuid: `VOLLIFE-${name}`,
      });
    inventory.devices.push({
      kernelName: dev,
      devicePath: `/dev/${dev}`,
      serial: diskSerialFor(v.id),
      devNumber: `254:${i}`,
    });
    inventory.exportsConfigured.push({
      exportName: `migration-vol-${name}`,
      targetPath: `/dev/mapper/${name}`,
    });
    inventory.exportsServed!.push(`migration-vol-${name}`);
  }
  for (let i = 0; i < rows.length; i += 1000) {
    await pool.query(
      `INSERT INTO device_mappings (volume_id, source_vm_name, disk_index, appliance_vm_id, location, device_path, virtio_serial, size_bytes, persistent_device_name, mapper_path, dm_state) VALUES ?`,
      [rows.slice(i, i + 1000)],
    );
    await pool.query(
      `INSERT INTO nbd_exports (export_name, volume_id, target_path, config_path, backend) VALUES ?`,
      [
        rows
          .slice(i, i + 1000)
          .map((r) => [`migration-vol-${r[8]}`, r[0], r[9], `/run/x/migration-vol-${r[8]}`, 'nbdkit-dir']),
      ],
    );
  }
  const cs = new CloudStackClient({ url: sim.url, apiKey: sim.apiKey, secretKey: sim.secretKey });
  const acts = createControlActivities({ cloudstack: cs, db: pool });
  const env = new MockActivityEnvironment();
  const times: number[] = [];
  let found = 0;
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  let heapPeak = heapBefore;
  const sampler = setInterval(() => (heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed)), 5);
  for (let run = 0; run < 5; run++) {
    const t = performance.now();
    const findings = (await env.run(acts.reconCompare, {
      applianceVmId,
      inventory: packInventory(inventory),
      backend: 'nbdkit-dir' as const,
    })) as unknown[];
    times.push(performance.now() - t);
    found = findings.length;
  }
  clearInterval(sampler);
  times.sort((a, b) => a - b);
  const inventoryBytes = JSON.stringify(inventory).length;
  const packedBytes = JSON.stringify(packInventory(inventory)).length;
  console.log(
    `  ${String(n).padStart(6)} mappings: compare p50 ${times[2]!.toFixed(0)} ms (min ${times[0]!.toFixed(0)}, max ${times[4]!.toFixed(0)}), ` +
      `${found} findings (expected ${Math.ceil(n / 100)}), heap +${((heapPeak - heapBefore) / 2 ** 20).toFixed(0)} MiB peak, ` +
      `inventory ${(inventoryBytes / 2 ** 20).toFixed(2)} MiB JSON, ${(packedBytes / 2 ** 20).toFixed(2)} MiB as sent (gzip)`,
  );
  await sim.close();
  await pool.end();
  await dropDatabase(cfg);
}
