import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { getMapping } from '../../src/db/mappings.js';
import { reconcileNow } from '../../src/reconcile/schedule.js';
import { listOperations, listSteps } from '../../src/db/operations.js';
import { assertConsistent, nbdkitPid, qemuIo } from '../support/checks.js';
import { recordHistory } from '../support/histories.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';
import {
  ExportWatcher,
  HeldConnection,
  killLiveClients,
  NbdStream,
  type StreamTick,
} from '../support/nbd-live.js';

/**
 * The seed's validation cycle, for a VM with two disks, on real parts: attach both for
 * replication → write a pattern through each export with a real NBD client → failover (the
 * export answers errors, not stale data) → the target VM changes data → failback (a different
 * /dev/vdY) → the same export name serves the changed data → attach again → delete.
 *
 * Then what a replication job sees of us while the system works (README "What replications
 * see"), measured with libnbd clients on this machine against the guest's nbdkit:
 * - a live stream on volume A's export (one connection writing and reading back verifiable
 *   blocks nonstop) while volume B goes through every saga and a reconcile pass repairs it: no
 *   error, no reconnect, every byte verified, nbdkit the same process throughout (the stream
 *   across host worker crashes: crash.lab.test.ts; across an nbd-server safe restart:
 *   test/integration/nbd-server.test.ts);
 * - A's own export while A goes failover → failback (another /dev/vdY) → attach: listed and
 *   opened at every 100 ms sample, and one connection held across it all.
 */
let s: LabStack;
// With the engine's database beside ours: every consistency check also checks its rows.
before(async () => (s = await startLabStack('cycle', { engineDb: true })));
after(async () => {
  await killLiveClients();
  await s?.close();
});

const VM = 'pgtest3';

test('validation cycle: attach → write → failover → target writes → failback → attach → delete', async () => {
  const vols = [await s.createVolume(1), await s.createVolume(1)];
  const base = { applianceVmId: s.applianceVmId };

  // attach both
  const attached = [];
  for (const [i, volumeId] of vols.entries()) {
    const h = await s.volumes.attach({ ...base, volumeId, sourceVmName: VM, diskKey: 2000 + i });
    const r = await h.result();
    await recordHistory(s.temporal, h.workflowId, h.runId, `attach-happy-${i}`);
    assert.equal(r.access?.persistentName, `${VM}disk${i}`);
    assert.equal(r.access?.exportName, `migration-vol-${VM}disk${i}`);
    assert.equal(r.access?.mapperPath, `/dev/mapper/${VM}disk${i}`);
    attached.push(r.access!);
    console.log(
      `attach: ${volumeId} → ${r.access!.devicePath} → ${r.access!.mapperPath} → ${r.access!.exportName}`,
    );
  }
  await assertConsistent(s, 'after attach');

  // replication writes a known pattern through each export
  for (const [i, a] of attached.entries()) {
    const out = await qemuIo(s.nbdUri(a.exportName), `write -P 0x${(0xa0 + i).toString(16)} 0 1M`);
    assert.match(out, /wrote 1048576\/1048576 bytes/, out);
    assert.match(
      await qemuIo(s.nbdUri(a.exportName), `read -P 0x${(0xa0 + i).toString(16)} 0 1M`),
      /read 1048576\/1048576 bytes/,
    );
  }

  // failover disk 0 to the migrated VM: the export stays and answers I/O errors
  const fo = await s.volumes.failover({ ...base, volumeId: vols[0]!, targetVmId: s.targetVmId });
  assert.equal((await fo.result()).location, 'target');
  await recordHistory(s.temporal, fo.workflowId, fo.runId, 'failover-happy');
  await assertConsistent(s, 'after failover');
  assert.ok((await s.servedExports()).includes(attached[0]!.exportName), 'export name survives failover');
  const stale = await qemuIo(s.nbdUri(attached[0]!.exportName), 'read -P 0xa0 0 4k');
  assert.match(stale, /Input\/output error|read failed/i, `reads fail cleanly after failover: ${stale}`);
  assert.equal((await s.cs.getVolume(vols[0]!))?.virtualmachineid, s.targetVmId);

  // meanwhile the appliance takes another VM's disk, which takes the freed /dev/vdX
  const other = await s.createVolume(1);
  vols.push(other);
  const otherR = await (
    await s.volumes.attach({ ...base, volumeId: other, sourceVmName: 'pg-test3', diskKey: 2000 })
  ).result();
  assert.match(
    otherR.access!.persistentName,
    /^pgtest3-[0-9a-f]{20}disk0$/,
    'pg-test3 and pgtest3 do not collide',
  );
  assert.equal(otherR.access!.devicePath, attached[0]!.devicePath, 'the kernel reused the freed device');
  await assertConsistent(s, 'after attaching another volume');

  // the migrated VM changes data in the volume (its disk is the same image file)
  const fh = await open(s.imagePath(vols[0]!), 'r+');
  await fh.write(Buffer.alloc(65536, 0xcd), 0, 65536, 0);
  await fh.close();

  // failback: back on the appliance as another /dev/vdY, same export name
  const fb = await s.volumes.failback({ ...base, volumeId: vols[0]! });
  const back = await fb.result();
  await recordHistory(s.temporal, fb.workflowId, fb.runId, 'failback-happy');
  assert.equal(back.access?.exportName, attached[0]!.exportName);
  assert.equal(back.access?.persistentName, attached[0]!.persistentName);
  console.log(
    `failback: ${attached[0]!.devicePath} → ${back.access!.devicePath} (export ${back.access!.exportName})`,
  );
  assert.notEqual(
    back.access?.devicePath,
    attached[0]!.devicePath,
    'the kernel gave the volume another device',
  );
  await assertConsistent(s, 'after failback');
  const changed = await qemuIo(s.nbdUri(back.access!.exportName), 'read -P 0xcd 0 64k');
  assert.match(changed, /read 65536\/65536 bytes/, `the export serves the target VM's data: ${changed}`);
  assert.match(await qemuIo(s.nbdUri(back.access!.exportName), 'read -P 0xa0 64k 64k'), /read 65536\/65536/);

  // attach again for the next replication: already there, same everything
  const again = await s.volumes.attach({ ...base, volumeId: vols[0]!, sourceVmName: VM, diskKey: 2000 });
  const againR = await again.result();
  assert.equal(againR.access?.devicePath, back.access?.devicePath);
  assert.equal(againR.access?.exportName, attached[0]!.exportName);
  await assertConsistent(s, 'after re-attach');

  // delete both: nothing is left
  for (const [i, volumeId] of vols.entries()) {
    const d = await s.volumes.delete({ ...base, volumeId });
    assert.equal((await d.result()).location, 'deleted');
    await recordHistory(s.temporal, d.workflowId, d.runId, `delete-happy-${i}`);
    assert.equal(await getMapping(s.db.pool, volumeId), undefined);
    assert.equal(await s.cs.getVolume(volumeId), undefined);
  }
  await assertConsistent(s, 'after delete');
  assert.deepEqual(await s.servedExports(), []);

  // the audit trail has every operation and its steps
  const ops = await listOperations(s.db.pool, { volumeId: vols[0]! });
  assert.deepEqual(ops.map((o) => o.type).sort(), ['attach', 'attach', 'delete', 'failback', 'failover']);
  assert.equal(vols.length, 3);
  assert.ok(ops.every((o) => o.status === 'completed'));
  const steps = await listSteps(s.db.pool, ops.find((o) => o.type === 'failback')!.operationId);
  assert.deepEqual(
    steps.filter((x) => x.phase === 'forward').map((x) => x.step),
    [
      'validate',
      'cloudstack-detach-target',
      'cloudstack-attach',
      'correlate',
      'resolve-conflicts',
      'dm-map',
      'record-mapping',
      'ensure-export',
    ],
  );
});

test('the engine lifecycle on a real kernel: create → attach → OS disk to a stopped VM as root → back → the same export serves its writes', async () => {
  const base = { applianceVmId: s.applianceVmId };
  const created = await (
    await s.volumes.create({
      ...base,
      name: 'migration-labos-labos-disk-0',
      sizeBytes: 1024 ** 3,
      diskOfferingId: s.sim.offering.id,
      zoneId: s.sim.zone.id,
      sourceVmName: 'labos',
      diskKey: 2000,
    })
  ).result();
  const volumeId = created.volumeId;
  assert.equal(created.persistentName, 'labosdisk0', 'the name is born at create');

  // attach with no naming: the name from create
  const a = (await (await s.volumes.attach({ ...base, volumeId })).result()).access!;
  assert.equal(a.exportName, 'migration-vol-labosdisk0');
  assert.match(await qemuIo(s.nbdUri(a.exportName), 'write -P 0x5a 0 1M'), /wrote 1048576\/1048576/);

  // root-disk failover: detach, then the destination (stopped, its placeholder root detached)
  // takes the volume as its root disk; the export stays and answers errors meanwhile
  await (await s.volumes.detach({ ...base, volumeId })).result();
  const dest = s.sim.sim.state.vms.get(s.targetVmId)!;
  dest.state = 'Stopped';
  try {
    const placeholder = (await s.cs.listVolumes({ virtualmachineid: s.targetVmId })).find(
      (v) => v.deviceid === 0,
    );
    if (placeholder) await s.cs.detachVolume(placeholder.id, { fromVmId: s.targetVmId });
    await (await s.volumes.failover({ ...base, volumeId, targetVmId: s.targetVmId, asRoot: true })).result();
    const cs = (await s.cs.getVolume(volumeId))!;
    assert.deepEqual([cs.virtualmachineid, cs.deviceid, cs.type], [s.targetVmId, 0, 'ROOT']);
    assert.ok((await s.servedExports()).includes(a.exportName), 'the export is still listed while away');
    assert.match(await qemuIo(s.nbdUri(a.exportName), 'read 0 4k'), /Input\/output error|read failed/i);

    // the destination boots from it and writes (its disk is the same image file)
    const fh = await open(s.imagePath(volumeId), 'r+');
    await fh.write(Buffer.alloc(65536, 0x7e), 0, 65536, 0);
    await fh.close();

    // back to the appliance (the VM is stopped, so its root may be detached): the same export
    const back = (await (await s.volumes.failback({ ...base, volumeId })).result()).access!;
    assert.equal(back.exportName, a.exportName);
    await assertConsistent(s, 'after the root-disk round trip');
    assert.match(await qemuIo(s.nbdUri(back.exportName), 'read -P 0x7e 0 64k'), /read 65536\/65536/);
    assert.match(await qemuIo(s.nbdUri(back.exportName), 'read -P 0x5a 64k 64k'), /read 65536\/65536/);
  } finally {
    dest.state = 'Running';
  }
  await (await s.volumes.delete({ ...base, volumeId })).result();
  assert.equal(await getMapping(s.db.pool, volumeId), undefined);
});

const base = () => ({ applianceVmId: s.applianceVmId });
let diskKey = 2000;
async function attach(vm: string) {
  const volumeId = await s.createVolume(1);
  const key = diskKey++;
  const r = await (await s.volumes.attach({ ...base(), volumeId, sourceVmName: vm, diskKey: key })).result();
  return { ...r.access!, volumeId, diskKey: key };
}

/** Bytes/s of the stream's ticks inside [from, to]. */
function throughput(ticks: StreamTick[], from: number, to: number): number {
  const inside = ticks.filter((t) => t.t > from && t.t <= to);
  const bytes = inside.reduce((n, t) => n + t.bytes, 0);
  return bytes / ((to - from) / 1000);
}
const mib = (bps: number) => (bps / 2 ** 20).toFixed(2);

test("a live stream on A's export stays error-free and verified while B goes through every saga and a repair", async () => {
  const a = await attach('livea');
  const nbdkit = await nbdkitPid(s);
  const stream = new NbdStream(s.nbdUri(a.exportName));
  await stream.started();

  const events: { name: string; from: number; to: number }[] = [];
  const during = async (name: string, f: () => Promise<unknown>) => {
    const from = Date.now();
    await f();
    events.push({ name, from, to: Date.now() });
  };
  // Idle first: the stream alone, the figure every event is compared with.
  await during('idle', () => new Promise((r) => setTimeout(r, 5_000)));

  let b!: Awaited<ReturnType<typeof attach>>;
  await during('B attach', async () => (b = await attach('liveb')));
  await during('B failover', async () => {
    await (await s.volumes.failover({ ...base(), volumeId: b.volumeId, targetVmId: s.targetVmId })).result();
  });
  await during('B failback', async () => {
    await (await s.volumes.failback({ ...base(), volumeId: b.volumeId })).result();
  });
  await during('B attach again', async () => {
    await (
      await s.volumes.attach({ ...base(), volumeId: b.volumeId, sourceVmName: 'liveb', diskKey: b.diskKey })
    ).result();
  });
  await during('B dm removed, reconcile repairs it', async () => {
    assert.equal((await s.lab.runner.run('dmsetup', ['remove', b.persistentName])).exitCode, 0);
    const run = await reconcileNow(s.temporal, {
      applianceVmId: s.applianceVmId,
      taskQueuePrefix: s.prefix,
      backend: 'nbdkit-dir',
      dryRun: false,
      correlationTimeoutMs: 10_000,
    });
    const r = await run.result();
    assert.deepEqual(
      r.findings.map((f) => `${f.kind}:${f.outcome}`),
      ['dm-missing:repaired'],
    );
    assert.match((await s.dmTable(b.persistentName)) ?? '', /linear/);
  });
  await during('B delete', async () => {
    await (await s.volumes.delete({ ...base(), volumeId: b.volumeId })).result();
  });

  const summary = await stream.stop();
  const ticks = stream.ticks();
  const idle = throughput(ticks, events[0]!.from, events[0]!.to);
  console.log(
    `stream on ${a.exportName}: ${summary.ops} write+read-back ops, ${mib(summary.bytes)} MiB, ` +
      `errors ${summary.errors}, mismatches ${summary.mismatches}, connects ${summary.connects}, ` +
      `longest op (stall) ${summary.maxLatMs.toFixed(0)} ms, blocks verified ${summary.blocksVerified}`,
  );
  for (const e of events) {
    const inside = ticks.filter((t) => t.t > e.from && t.t <= e.to);
    const stall = Math.max(0, ...inside.map((t) => t.maxLatMs));
    console.log(
      `  ${e.name.padEnd(36)} ${((e.to - e.from) / 1000).toFixed(1).padStart(5)} s  ` +
        `${mib(throughput(ticks, e.from, e.to)).padStart(6)} MiB/s (${((throughput(ticks, e.from, e.to) / idle) * 100).toFixed(0)} % of idle)  longest op ${stall.toFixed(0)} ms`,
    );
  }

  assert.deepEqual(summary.firstErrors, [], 'no I/O error on the stream');
  assert.equal(summary.errors, 0);
  assert.equal(summary.mismatches, 0, 'every block read back as written');
  assert.equal(summary.connects, 1, 'one connection, never reopened');
  assert.equal(summary.blocksBad, 0);
  assert.ok(summary.blocksVerified >= 64, `blocks verified at the end: ${summary.blocksVerified}`);
  // Bound: the longest op measured here was 87 ms (B's delete); 1 s is a stall a replication
  // job would notice.
  assert.ok(summary.maxLatMs < 1_000, `no stall of 1 s or more: longest ${summary.maxLatMs.toFixed(0)} ms`);
  for (const e of events) {
    assert.ok(throughput(ticks, e.from, e.to) > 0, `the stream moved data during "${e.name}"`);
  }
  assert.equal(
    await nbdkitPid(s),
    nbdkit,
    'the same nbdkit process served throughout (it outlives the host worker)',
  );
  await assertConsistent(s, 'after the stream');
});

test("A's own export is listed and opens at every 100 ms sample through failover, failback to another device and attach; a connection held across it reaches the new device", async () => {
  const a = await attach('livec');
  const imageA = s.imagePath(a.volumeId);
  const held = new HeldConnection(s.nbdUri(a.exportName));
  await held.ready();
  assert.ok((await held.write(0, 65536, 0xa1)).ok);
  assert.ok((await held.flush()).ok);
  const watcher = new ExportWatcher(s.nbdUri(''), a.exportName, 100);
  await watcher.started();

  const phases: { name: string; at: number }[] = [];
  const phase = (name: string) => phases.push({ name, at: Date.now() });

  phase('failover');
  await (await s.volumes.failover({ ...base(), volumeId: a.volumeId, targetVmId: s.targetVmId })).result();
  phase('away');
  const away = await held.read(0, 4096);
  assert.equal(away.ok, false, 'the held connection gets errors while the volume is away');
  assert.equal(away.error, 'EIO');
  // The migrated VM writes to its disk (the same image file) while it is away.
  const fh = await open(imageA, 'r+');
  await fh.write(Buffer.alloc(65536, 0xcd), 0, 65536, 65536);
  await fh.close();
  // Other volumes take the freed devices (the kernel gives the lowest free one) until one has
  // A's, so A comes back as another /dev/vdY.
  let other = await attach('lived');
  for (let i = 0; other.devicePath !== a.devicePath && i < 4; i++) other = await attach('lived');
  assert.equal(other.devicePath, a.devicePath, 'another volume took the device A had');

  phase('failback');
  const back = (await (await s.volumes.failback({ ...base(), volumeId: a.volumeId })).result()).access!;
  assert.notEqual(back.devicePath, a.devicePath, 'A came back on another device');
  assert.equal(back.exportName, a.exportName);
  phase('attach');
  await (
    await s.volumes.attach({ ...base(), volumeId: a.volumeId, sourceVmName: 'livec', diskKey: a.diskKey })
  ).result();
  phase('end');
  const samples = await watcher.stop();

  // Same connection, after failback: it reads the target VM's data and its writes land on A's
  // volume (A's image), not on the device it used to have (now the other volume's).
  const read = await held.read(65536, 65536);
  assert.deepEqual(
    read,
    { ...read, ok: true, bytes: [0xcd] },
    "the held connection reads the target VM's data",
  );
  assert.deepEqual((await held.read(0, 65536)).bytes, [0xa1], 'and what it wrote before failover');
  assert.ok((await held.write(131072, 65536, 0xb2)).ok);
  assert.ok((await held.flush()).ok);
  await held.close();
  const at = async (image: string, off: number) => {
    const f = await open(image, 'r');
    const buf = Buffer.alloc(65536);
    await f.read(buf, 0, buf.length, off);
    await f.close();
    return [...new Set(buf)].sort((x, y) => x - y);
  };
  assert.deepEqual(
    await at(imageA, 131072),
    [0xb2],
    "the held connection's write after failback is on A's volume",
  );
  assert.deepEqual(await at(s.imagePath(other.volumeId), 131072), [0], 'and not on the device A had before');

  const absent = samples.filter((x) => !x.listed || !x.opened);
  const io = (from: string, to: string) => {
    const f = phases.find((p) => p.name === from)!.at;
    const t = phases.find((p) => p.name === to)!.at;
    return samples.filter((x) => x.t >= f && x.t < t).map((x) => x.io);
  };
  const durationS = (samples.at(-1)!.t - samples[0]!.t) / 1000;
  console.log(
    `watcher on ${a.exportName}: ${samples.length} samples over ${durationS.toFixed(1)} s, ` +
      `absences ${absent.length}, longest sample ${Math.max(...samples.map((x) => x.ms)).toFixed(0)} ms; ` +
      `reads while away: ${io('away', 'failback').filter((x) => x === 'EIO').length} EIO of ${io('away', 'failback').length}; ` +
      `after failback: ${io('attach', 'end').filter((x) => x === 'ok').length} ok of ${io('attach', 'end').length}`,
  );
  assert.deepEqual(absent.slice(0, 3), [], `the export was listed and opened at every sample`);
  assert.ok(samples.length >= durationS * 5, `a sample every ~100 ms (${samples.length} in ${durationS} s)`);
  assert.ok(
    io('away', 'failback').every((x) => x === 'EIO'),
    `reads while away are EIO: ${io('away', 'failback').join()}`,
  );
  assert.ok(
    io('attach', 'end').every((x) => x === 'ok'),
    `reads after failback succeed: ${io('attach', 'end').join()}`,
  );
  await assertConsistent(s, 'after the watcher');
});
