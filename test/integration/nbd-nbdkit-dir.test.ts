import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { NbdkitSupervisor } from '../../src/nbd/index.js';
import { compareExports, createExportBackend, NbdkitDirBackend } from '../../src/nbd/index.js';
import { isAlive } from '../../src/nbd/process.js';
import { localRunner } from '../../src/command/runner.js';
import { freePort, head16, HeldClient, missingTool, nbdcopy, sparseFile, tempDir } from './nbd-helpers.js';

/**
 * nbdkit `file dir=` backend against a real nbdkit on 127.0.0.1 (ephemeral port, temp dir).
 * Regular sparse files stand in for /dev/mapper/<name>.
 */
const missing = await missingTool('nbdkit', 'nbdinfo', 'nbdcopy', 'qemu-io', 'ps', 'pgrep');

void describe(
  'nbdkit-dir backend (real nbdkit)',
  { skip: missing ? `${missing} not installed` : false },
  () => {
    let dir = '';
    let port = 0;
    let backend: NbdkitDirBackend;
    let supervisor: NbdkitSupervisor;
    let pid: number | undefined;
    const clients: HeldClient[] = [];

    before(async () => {
      dir = await tempDir('nbd-nbdkit');
      await fsp.mkdir(path.join(dir, 'dev'));
      port = await freePort();
      const b = createExportBackend({
        kind: 'nbdkit-dir',
        exportsDir: path.join(dir, 'exports'),
        host: '127.0.0.1',
        port,
        pidFile: path.join(dir, 'nbdkit.pid'),
      });
      assert.ok(b instanceof NbdkitDirBackend && b.supervisor);
      backend = b;
      supervisor = b.supervisor;
      pid = (await supervisor.start()).pid;
    });

    after(async () => {
      for (const c of clients) await c.close();
      try {
        await supervisor?.stop();
      } finally {
        // Belt and braces: the PID we were given, even if the pid file went missing.
        if (pid !== undefined && (await isAlive(localRunner, pid))) process.kill(pid, 'SIGKILL');
        if (dir) await fsp.rm(dir, { recursive: true, force: true });
      }
    });

    void it('start is idempotent and the empty server lists nothing', async () => {
      const again = await supervisor.start();
      assert.equal(again.started, false);
      assert.equal(again.pid, pid);
      assert.deepEqual(await backend.listServed(), []);
    });

    void it('creates an export as an atomic symlink, lists it over NBD, moves data both ways', async () => {
      const dev = path.join(dir, 'dev', 'vol1-a');
      await sparseFile(dev, 1 << 20, 'A');
      const r = await backend.ensure({ exportName: 'migration-vol-vol1', targetPath: dev });
      assert.deepEqual(r, {
        created: true,
        changed: true,
        configPath: path.join(dir, 'exports', 'migration-vol-vol1'),
      });
      assert.equal(await fsp.readlink(r.configPath), dev);
      // The staging directory is the only other entry, and nbdkit does not serve directories.
      assert.deepEqual((await fsp.readdir(path.join(dir, 'exports'))).sort(), [
        '.staging',
        'migration-vol-vol1',
      ]);

      assert.deepEqual(await backend.listServed(), [
        { exportName: 'migration-vol-vol1', sizeBytes: 1 << 20 },
      ]);
      assert.deepEqual(await backend.probe('migration-vol-vol1'), { ok: true, sizeBytes: 1 << 20 });

      // Write through NBD, read back through NBD and from the file.
      const src = path.join(dir, 'src.img');
      await sparseFile(src, 1 << 20, 'W');
      await nbdcopy(src, backend.uriFor('migration-vol-vol1'));
      assert.equal(await head16(dev), 'W'.repeat(16));
      const back = path.join(dir, 'back.img');
      await nbdcopy(backend.uriFor('migration-vol-vol1'), back);
      assert.equal(await head16(back), 'W'.repeat(16));
    });

    void it('ensure of an identical export is a no-op', async () => {
      const dev = path.join(dir, 'dev', 'vol1-a');
      const r = await backend.ensure({ exportName: 'migration-vol-vol1', targetPath: dev });
      assert.equal(r.created, false);
      assert.equal(r.changed, false);
      const configured = await backend.listConfigured();
      assert.deepEqual(compareExports(configured, await backend.listServed()), {
        both: ['migration-vol-vol1'],
        stale: [],
        notServed: [],
      });
    });

    void it('retarget: a new connection sees the new file, a held connection keeps the old one', async () => {
      const held = new HeldClient(backend.uriFor('migration-vol-vol1'));
      clients.push(held);
      assert.equal(await held.read16(), 'W'.repeat(16));

      const devB = path.join(dir, 'dev', 'vol1-b');
      await sparseFile(devB, 2 << 20, 'B');
      const r = await backend.ensure({ exportName: 'migration-vol-vol1', targetPath: devB });
      assert.equal(r.created, false);
      assert.equal(r.changed, true);

      assert.deepEqual(await backend.probe('migration-vol-vol1'), { ok: true, sizeBytes: 2 << 20 });
      const back = path.join(dir, 'back-b.img');
      await nbdcopy(backend.uriFor('migration-vol-vol1'), back);
      assert.equal(await head16(back), 'B'.repeat(16));
      assert.equal(await held.read16(), 'W'.repeat(16), 'held connection keeps its open file');
      await held.close();
    });

    void it('an export whose target is missing is configured but not served (unknown export)', async () => {
      await backend.ensure({ exportName: 'migration-vol-ghost', targetPath: path.join(dir, 'dev', 'nope') });
      const served = await backend.listServed();
      assert.deepEqual(
        served.map((s) => s.exportName),
        ['migration-vol-vol1'],
      );
      assert.deepEqual(compareExports(await backend.listConfigured(), served).notServed, [
        'migration-vol-ghost',
      ]);
      const p = await backend.probe('migration-vol-ghost');
      assert.equal(p.ok, false);
      assert.equal(!p.ok && p.reason, 'unknown-export');
    });

    void it('remove: gone from the listing at once, then unknown; removing again is a no-op', async () => {
      assert.deepEqual(await backend.remove('migration-vol-vol1'), { removed: true });
      assert.deepEqual(await backend.remove('migration-vol-ghost'), { removed: true });
      assert.deepEqual(await backend.listServed(), []);
      const p = await backend.probe('migration-vol-vol1');
      assert.equal(p.ok, false);
      assert.equal(!p.ok && p.reason, 'unknown-export');
      assert.match(!p.ok ? p.message : '', /has no export named 'migration-vol-vol1'/);
      assert.deepEqual(await backend.remove('migration-vol-vol1'), { removed: false });
    });

    void it('refuses to clobber a non-symlink entry under an export name', async () => {
      await fsp.writeFile(path.join(dir, 'exports', 'migration-vol-plain'), 'x');
      await assert.rejects(
        backend.ensure({ exportName: 'migration-vol-plain', targetPath: path.join(dir, 'dev', 'vol1-a') }),
        /exportName.*not a symlink/,
      );
      await fsp.rm(path.join(dir, 'exports', 'migration-vol-plain'));
    });

    void it('stop ends nbdkit by PID; the port then refuses connections', async () => {
      assert.deepEqual(await supervisor.stop(), { stopped: true });
      assert.equal(await isAlive(localRunner, pid ?? 0), false);
      const p = await backend.probe('migration-vol-vol1');
      assert.equal(!p.ok && p.reason, 'connection-failed');
      assert.deepEqual(await supervisor.stop(), { stopped: false });
    });
  },
);
