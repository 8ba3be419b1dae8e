import assert from 'node:assert/strict';
import { execa } from 'execa';
import { listExports as dbExports } from '../../src/db/exports.js';
import { listMappings } from '../../src/db/mappings.js';
import { DEFAULT_NBDKIT_PID_FILE } from '../../src/nbd/index.js';
import { commandOf, parsePid } from '../../src/nbd/process.js';
import { engineExportNameOf } from '../../src/domain/device-names.js';
import { assertEngineRowsFollow, type EngineDb } from './engine-db.js';
import type { LabStack } from './lab-stack.js';

/** The PID in the guest's nbdkit pid file, asserted to be a running nbdkit. */
export async function nbdkitPid(s: LabStack, pidFile = DEFAULT_NBDKIT_PID_FILE): Promise<number> {
  const pid = parsePid(await s.lab.execOk(['cat', pidFile], { timeoutMs: 60_000 }));
  assert.ok(pid, `a pid in ${pidFile}`);
  assert.equal(await commandOf(s.lab.runner, pid), 'nbdkit', `${pidFile} names a running nbdkit`);
  return pid;
}

/** Run qemu-io against an export (a real NBD client); returns its combined output. */
export async function qemuIo(uri: string, command: string): Promise<string> {
  const r = await execa('qemu-io', ['-f', 'raw', uri, '-c', command], { reject: false, timeout: 60_000 });
  return `${r.stdout}\n${r.stderr}`;
}

/**
 * After every step: the NBD server's export list (over the protocol) equals the database's, and
 * each dm device's table equals the database's mapping (linear over the device now carrying
 * the volume's serial, or an error target), and no dm device exists that the database lacks.
 */
export async function assertConsistent(s: LabStack, where: string): Promise<void> {
  const rows = await listMappings(s.db.pool, { applianceVmId: s.applianceVmId });
  // Each export under both its names: the persistent one, and the one the engine parses.
  const exports = await dbExports(s.db.pool);
  const exportRows = exports.flatMap((e) => [e.exportName, engineExportNameOf(e.volumeId)]).sort();
  assert.deepEqual(await s.servedExports(), exportRows, `${where}: served exports = database exports`);
  const engineDb = (s as LabStack & { engineDb?: EngineDb }).engineDb;
  if (engineDb) for (const r of rows) await assertEngineRowsFollow(s.db.pool, engineDb, r.volumeId, where);
  const named = rows.filter((r) => r.persistentName);
  assert.deepEqual(
    (await s.dmNames()).filter((n) => /disk\d+$/.test(n)),
    named.map((r) => r.persistentName!).sort(),
    `${where}: dm devices = database mappings`,
  );
  for (const r of named) {
    const table = await s.dmTable(r.persistentName!);
    if (r.dmState === 'linear') {
      assert.ok(r.devicePath, `${where}: linear mapping has a device path`);
      const st = await s.lab.runner.run('stat', ['-L', '-c', '%t:%T', r.devicePath!]);
      const [maj, min] = st.stdout
        .trim()
        .split(':')
        .map((h) => parseInt(h, 16));
      assert.equal(
        table,
        `0 ${r.sizeBytes / 512} linear ${maj}:${min} 0`,
        `${where}: ${r.persistentName} table`,
      );
      const serial = await s.lab.runner.run('cat', [
        `/sys/block/${r.devicePath!.replace('/dev/', '')}/serial`,
      ]);
      assert.equal(
        serial.stdout.trim(),
        r.virtioSerial,
        `${where}: ${r.devicePath} carries the volume's serial`,
      );
    } else if (r.dmState === 'error') {
      assert.equal(table, `0 ${r.sizeBytes / 512} error`, `${where}: ${r.persistentName} is an error target`);
    }
  }
}
