import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { localRunner } from '../../src/command/runner.js';
import type { NbdServerSupervisor } from '../../src/nbd/index.js';
import {
  createExportBackend,
  NbdServerBackend,
  NbdServerNoExportsError,
  renderExportConfig,
  sighupIsSafe,
} from '../../src/nbd/index.js';
import { childrenOf, isAlive } from '../../src/nbd/process.js';
import { killLiveClients, NbdStream } from '../support/nbd-live.js';
import { freePort, head16, HeldClient, missingTool, nbdcopy, sparseFile, tempDir } from './nbd-helpers.js';

/**
 * nbd-server backend against the installed nbd-server (Debian 12: 3.24) on 127.0.0.1, with an
 * ephemeral port and a temp dir. Regular sparse files stand in for /dev/mapper/<name>.
 */
const missing = await missingTool('nbd-server', 'nbdinfo', 'nbdcopy', 'qemu-io', 'ps', 'pgrep');

void describe(
  'nbd-server backend (real nbd-server)',
  { skip: missing ? `${missing} not installed` : false },
  () => {
    let dir = '';
    let backend: NbdServerBackend;
    let sup: NbdServerSupervisor;
    const seenPids = new Set<number>();
    let held: HeldClient | undefined;
    const dev = (n: string) => path.join(dir, 'dev', n);

    before(async () => {
      dir = await tempDir('nbd-server');
      await fsp.mkdir(path.join(dir, 'dev'));
      const port = await freePort();
      const b = createExportBackend({
        kind: 'nbd-server',
        confDir: path.join(dir, 'conf.d'),
        mainConfigPath: path.join(dir, 'config'),
        pidFile: path.join(dir, 'nbd-server.pid'),
        host: '127.0.0.1',
        port,
      });
      assert.ok(b instanceof NbdServerBackend && b.supervisor);
      backend = b;
      sup = b.supervisor;
    });

    after(async () => {
      try {
        await killLiveClients();
        await held?.close();
        await sup?.stop();
      } finally {
        // Whatever happened above: every nbd-server PID this test saw, by PID.
        for (const pid of seenPids) {
          if (await isAlive(localRunner, pid)) process.kill(pid, 'SIGKILL');
        }
        if (dir) await fsp.rm(dir, { recursive: true, force: true });
      }
    });

    async function track(): Promise<number> {
      const pid = await sup.pid();
      assert.ok(pid !== undefined, 'nbd-server is running');
      seenPids.add(pid);
      for (const c of await childrenOf(localRunner, pid)) seenPids.add(c);
      return pid;
    }

    void it('refuses to start without any export (nbd-server would quit)', async () => {
      await assert.rejects(sup.start(), NbdServerNoExportsError);
    });

    void it('first ensure writes the .conf and starts the server; data round-trips over NBD', async (t) => {
      t.diagnostic(`nbd-server version ${(await sup.version())?.text}`);
      await sparseFile(dev('alpha'), 1 << 20, 'A');
      const r = await backend.ensure({ exportName: 'migration-vol-alpha', targetPath: dev('alpha') });
      assert.deepEqual(r, {
        created: true,
        changed: true,
        configPath: path.join(dir, 'conf.d', 'migration-vol-alpha.conf'),
        applied: 'started',
      });
      await track();
      assert.equal(
        await fsp.readFile(r.configPath, 'utf8'),
        `[migration-vol-alpha]\nexportname = ${dev('alpha')}\n`,
      );
      const main = await fsp.readFile(path.join(dir, 'config'), 'utf8');
      assert.match(main, /^\[generic\]$/m);
      assert.match(main, /^allowlist = true$/m);
      assert.doesNotMatch(main, /^user\s*=/m);

      assert.deepEqual(await backend.listServed(), [{ exportName: 'migration-vol-alpha' }]);
      assert.deepEqual(await backend.probe('migration-vol-alpha'), { ok: true, sizeBytes: 1 << 20 });
      const src = path.join(dir, 'src.img');
      await sparseFile(src, 1 << 20, 'W');
      await nbdcopy(src, backend.uriFor('migration-vol-alpha'));
      assert.equal(await head16(dev('alpha')), 'W'.repeat(16));
      await nbdcopy(backend.uriFor('migration-vol-alpha'), path.join(dir, 'back.img'));
      assert.equal(await head16(path.join(dir, 'back.img')), 'W'.repeat(16));
    });

    void it('ensure of an identical export changes nothing and does not touch the server', async () => {
      const before = await sup.pid();
      const r = await backend.ensure({ exportName: 'migration-vol-alpha', targetPath: dev('alpha') });
      assert.equal(r.created, false);
      assert.equal(r.changed, false);
      assert.equal(r.applied, 'none');
      assert.equal(await sup.pid(), before);
    });

    void it('SIGHUP is refused on a version with gh-143', async (t) => {
      const v = await sup.version();
      if (sighupIsSafe(v)) return t.skip(`nbd-server ${v?.text} has the fix`);
      await assert.rejects(sup.reload(), /refusing to SIGHUP nbd-server 3\.24/);
    });

    void it('safe restart adds a new export while a connected client keeps reading and writing', async (t) => {
      held = new HeldClient(backend.uriFor('migration-vol-alpha'));
      assert.equal(await held.read16(), 'W'.repeat(16));
      const oldPid = await track();
      const childrenBefore = await childrenOf(localRunner, oldPid);
      assert.ok(childrenBefore.length >= 1, 'the held client has a serving child');

      await sparseFile(dev('bravo'), 2 << 20, 'B');
      const t0 = Date.now();
      const r = await backend.ensure({ exportName: 'migration-vol-bravo', targetPath: dev('bravo') });
      t.diagnostic(`safe restart (SIGKILL old main → new main listing both) took ${Date.now() - t0} ms`);
      assert.equal(r.applied, sighupIsSafe(await sup.version()) ? 'sighup' : 'safe-restart');
      const newPid = await track();
      assert.notEqual(newPid, oldPid);
      assert.equal(await isAlive(localRunner, oldPid), false, 'old main process is gone');
      for (const c of childrenBefore)
        assert.equal(await isAlive(localRunner, c), true, `orphaned child ${c} alive`);
      assert.deepEqual((await sup.orphans()).sort(), [...childrenBefore].sort());

      assert.deepEqual((await backend.listServed()).map((s) => s.exportName).sort(), [
        'migration-vol-alpha',
        'migration-vol-bravo',
      ]);
      assert.deepEqual(await backend.probe('migration-vol-bravo'), { ok: true, sizeBytes: 2 << 20 });
      // The held connection survived: it reads, and its write lands in the file.
      assert.equal(await held.read16(), 'W'.repeat(16));
      await held.write16(0x43);
      assert.equal(await head16(dev('alpha')), 'C'.repeat(16));
      // New connections to the old export go to the new server.
      assert.deepEqual(await backend.probe('migration-vol-alpha'), { ok: true, sizeBytes: 1 << 20 });
    });

    void it('probe: missing target → access-denied; unknown name → unknown-export', async () => {
      const r = await backend.ensure({ exportName: 'migration-vol-ghost', targetPath: dev('missing') });
      assert.equal(r.created, true);
      await track();
      assert.ok(
        (await backend.listServed()).some((s) => s.exportName === 'migration-vol-ghost'),
        'listed anyway',
      );
      const p = await backend.probe('migration-vol-ghost');
      assert.equal(p.ok, false);
      assert.equal(!p.ok && p.reason, 'access-denied');
      assert.match(!p.ok ? p.message : '', /server policy prevents NBD_OPT_GO/);
      const u = await backend.probe('migration-vol-nosuch');
      assert.equal(!u.ok && u.reason, 'unknown-export');
    });

    void it('remove deletes the .conf but the server still serves the name until a restart; purgeStale restarts', async () => {
      const r = await backend.remove('migration-vol-bravo');
      assert.deepEqual(r, { removed: true, stillServed: true });
      assert.deepEqual(await backend.compare(), {
        both: ['migration-vol-alpha', 'migration-vol-ghost'],
        stale: ['migration-vol-bravo'],
        notServed: [],
      });
      assert.deepEqual(await backend.probe('migration-vol-bravo'), { ok: true, sizeBytes: 2 << 20 });

      const p = await backend.purgeStale();
      assert.deepEqual(p, { restarted: true, stale: ['migration-vol-bravo'] });
      await track();
      assert.deepEqual((await backend.compare()).stale, []);
      const gone = await backend.probe('migration-vol-bravo');
      assert.equal(!gone.ok && gone.reason, 'unknown-export');
      assert.equal(await held?.read16(), 'C'.repeat(16), 'held client survives a second safe restart');
      assert.deepEqual(await backend.remove('migration-vol-bravo'), { removed: false, stillServed: false });
    });

    void it('a live replication stream (libnbd, one connection) sees no error and no stall while a safe restart adds an export', async (t) => {
      const stream = new NbdStream(backend.uriFor('migration-vol-alpha'), { blocks: 16 });
      await stream.started();
      await new Promise((r) => setTimeout(r, 1_000)); // idle, for the figure below
      const oldPid = await track();
      await sparseFile(dev('delta'), 1 << 20, 'D');
      const from = Date.now();
      const r = await backend.ensure({ exportName: 'migration-vol-delta', targetPath: dev('delta') });
      const to = Date.now();
      assert.equal(r.applied, sighupIsSafe(await sup.version()) ? 'sighup' : 'safe-restart');
      assert.notEqual(await track(), oldPid, 'a new main process');
      await new Promise((r) => setTimeout(r, 500)); // the stream goes on after the restart
      const summary = await stream.stop();
      const inside = stream.ticks().filter((x) => x.t > from && x.t <= to + 200);
      t.diagnostic(
        `stream across a ${to - from} ms safe restart: ${summary.ops} ops, errors ${summary.errors}, ` +
          `longest op ${summary.maxLatMs.toFixed(1)} ms (during the restart ${Math.max(0, ...inside.map((x) => x.maxLatMs)).toFixed(1)} ms)`,
      );
      assert.deepEqual(summary.firstErrors, []);
      assert.equal(summary.errors + summary.mismatches + summary.blocksBad, 0);
      assert.equal(summary.blocksVerified, 16, 'every block read back as last written, same connection');
      // The orphaned child serves the held connection; the restart never touches it.
      assert.ok(summary.maxLatMs < 1_000, `longest op ${summary.maxLatMs} ms`);
      assert.ok(
        stream.ticks().some((x) => x.t > to && x.ops > 0),
        'the stream moved data after the restart',
      );
    });

    void it('SIGHUP reload is append-only: a new .conf is added, a deleted .conf stays listed', async (t) => {
      // One SIGHUP to a fresh main process; on 3.24 only the listing is asserted (gh-143 can break
      // the *connections* even after one SIGHUP, docs/nbd-servers.md, fact 2).
      await fsp.rm(path.join(dir, 'conf.d', 'migration-vol-ghost.conf'));
      await sparseFile(dev('charlie'), 1 << 20, 'C');
      const charlie = { exportName: 'migration-vol-charlie', targetPath: dev('charlie') };
      await fsp.writeFile(path.join(dir, 'conf.d', '.charlie.tmp'), renderExportConfig(charlie));
      await fsp.rename(
        path.join(dir, 'conf.d', '.charlie.tmp'),
        path.join(dir, 'conf.d', 'migration-vol-charlie.conf'),
      );

      const pid = await track();
      await sup.reload({ expect: ['migration-vol-charlie'], allowCrashingVersion: true });
      const names = (await backend.listServed()).map((s) => s.exportName);
      t.diagnostic(`listed after SIGHUP: ${names.join(', ')}`);
      assert.ok(names.includes('migration-vol-charlie'), 'new section appended');
      assert.ok(names.includes('migration-vol-ghost'), 'deleted section still in memory');
      assert.deepEqual((await backend.compare()).stale, ['migration-vol-ghost']);
      assert.equal(await sup.pid(), pid, 'same process: it was a reload, not a restart');
    });

    void it('stop ends the main process and every orphan by PID', async () => {
      const orphans = await sup.orphans();
      const pid = await track();
      const res = await sup.stop();
      assert.equal(res.stopped, true);
      assert.equal(res.orphansStopped, orphans.length);
      assert.equal(await isAlive(localRunner, pid), false);
      for (const o of orphans) assert.equal(await isAlive(localRunner, o), false);
      const p = await backend.probe('migration-vol-alpha');
      assert.equal(!p.ok && p.reason, 'connection-failed');
    });
  },
);
