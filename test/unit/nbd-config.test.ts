import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  createExportBackend,
  NbdkitDirBackend,
  NbdServerBackend,
  NbdValidationError,
  parseNbdServerVersion,
  renderExportConfig,
  renderMainConfig,
  sighupIsSafe,
  validateExportSpec,
} from '../../src/nbd/index.js';
import { parseExportConfig } from '../../src/nbd/nbd-server.js';
import { parseExportBackendConfig } from '../../src/nbd/index.js';

function rejectsField(fn: () => unknown, field: string) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof NbdValidationError, `expected NbdValidationError, got ${String(e)}`);
    assert.equal(e.field, field);
    assert.match(e.message, new RegExp(`^invalid ${field}: `));
    return true;
  });
}

void test('export include file: one section named after the export, exportname = path', () => {
  const text = renderExportConfig({
    exportName: 'migration-vol-pgtest3disk0',
    targetPath: '/dev/mapper/pgtest3disk0',
  });
  assert.equal(text, '[migration-vol-pgtest3disk0]\nexportname = /dev/mapper/pgtest3disk0\n');
  assert.deepEqual(parseExportConfig(text), [
    { exportName: 'migration-vol-pgtest3disk0', targetPath: '/dev/mapper/pgtest3disk0' },
  ]);
});

void test('main config: [generic] first, allowlist, includedir, listen address and port, no user', () => {
  const text = renderMainConfig({ host: '127.0.0.1', port: 10809, includeDir: '/etc/nbd-server/conf.d' });
  const lines = text.split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(lines, [
    '[generic]',
    'listenaddr = 127.0.0.1',
    'port = 10809',
    'allowlist = true',
    'includedir = /etc/nbd-server/conf.d',
  ]);
  assert.doesNotMatch(text, /^\s*(user|group)\s*=/m);
  rejectsField(() => renderMainConfig({ host: '127.0.0.1\nuser = nbd', port: 1, includeDir: '/x' }), 'host');
  rejectsField(() => renderMainConfig({ host: '127.0.0.1', port: 70000, includeDir: '/x' }), 'port');
  rejectsField(() => renderMainConfig({ host: '127.0.0.1', port: 1, includeDir: 'conf.d' }), 'includeDir');
});

void test('export names that could inject config or escape a directory are rejected, naming the field', () => {
  const ok = '/dev/mapper/x';
  for (const bad of [
    'migration-vol-x\n[generic]',
    'migration-vol-x]',
    'migration-vol-x=1',
    'migration-vol-a/b',
    'migration-vol-..',
    '..',
    'migration-vol-x y',
    'migration-vol-X',
    'pgtest3disk0', // no prefix
    '',
    'migration-vol-' + 'a'.repeat(65), // over-long
  ]) {
    rejectsField(() => validateExportSpec({ exportName: bad, targetPath: ok }), 'exportName');
    rejectsField(() => renderExportConfig({ exportName: bad, targetPath: ok }), 'exportName');
  }
  // The longest allowed name passes.
  validateExportSpec({ exportName: 'migration-vol-' + 'a'.repeat(64), targetPath: ok });
});

void test('target paths must be absolute, normalised, without .. or characters GLib would reinterpret', () => {
  const name = 'migration-vol-x';
  for (const bad of [
    'dev/mapper/x',
    '/dev/mapper/x\nreadonly = true',
    '/dev/mapper/x\\n',
    '/dev/mapper/../sda',
    '/dev/mapper//x',
    '/dev/mapper/x/',
    '/dev/mapper/x y',
    '/dev/mapper/x]',
    '/dev/mapper/x=',
    ' /dev/mapper/x',
    '/' + 'a'.repeat(1100),
  ]) {
    rejectsField(() => validateExportSpec({ exportName: name, targetPath: bad }), 'targetPath');
  }
  validateExportSpec({ exportName: name, targetPath: '/tmp/nbd-server-AbC123/dev/vol_1.img' });
});

void test('nbd-server -V parsing and the SIGHUP gate (gh-143 fixed in 3.25)', () => {
  const v324 = parseNbdServerVersion('This is nbd-server version 3.24\n');
  assert.deepEqual(v324, { major: 3, minor: 24, patch: 0, text: '3.24' });
  assert.equal(sighupIsSafe(v324), false);
  assert.equal(sighupIsSafe(parseNbdServerVersion('This is nbd-server version 3.25')), true);
  assert.equal(sighupIsSafe(parseNbdServerVersion('This is nbd-server version 3.26.1')), true);
  assert.equal(parseNbdServerVersion('This is nbd-server version 3.26.1')?.patch, 1);
  assert.equal(sighupIsSafe(parseNbdServerVersion('This is nbd-server version 3.9')), false);
  assert.equal(sighupIsSafe(parseNbdServerVersion('This is nbd-server version 4.0')), true);
  assert.equal(parseNbdServerVersion('garbage'), undefined);
  assert.equal(sighupIsSafe(undefined), false, 'unknown version: no SIGHUP');
});

void test('factory picks the backend by kind and names the bad field', () => {
  const kit = createExportBackend({
    kind: 'nbdkit-dir',
    exportsDir: '/run/vl/exports',
    host: '127.0.0.1',
    port: 10809,
  });
  assert.ok(kit instanceof NbdkitDirBackend);
  assert.equal(kit.kind, 'nbdkit-dir');
  assert.equal(kit.uriFor('migration-vol-a'), 'nbd://127.0.0.1:10809/migration-vol-a');
  assert.ok(kit.supervisor);

  const srv = createExportBackend({ kind: 'nbd-server', confDir: '/etc/nbd-server/conf.d', port: 10809 });
  assert.ok(srv instanceof NbdServerBackend);
  assert.equal(srv.confPath('migration-vol-a'), '/etc/nbd-server/conf.d/migration-vol-a.conf');
  assert.ok(srv.supervisor);
  assert.equal(srv.supervisor.mainConfigPath, '/etc/nbd-server/volume-lifecycle.config');
  const unmanaged = createExportBackend({ kind: 'nbd-server', confDir: '/c', manageServer: false });
  assert.ok(unmanaged instanceof NbdServerBackend);
  assert.equal(unmanaged.supervisor, undefined);

  const v6 = createExportBackend({ kind: 'nbdkit-dir', exportsDir: '/e', host: '::1', port: 1 });
  assert.equal(v6.uriFor('migration-vol-a'), 'nbd://[::1]:1/migration-vol-a');

  rejectsField(
    () => parseExportBackendConfig({ kind: 'nbdkit-dir', exportsDir: 'relative', port: 1 }),
    'exportsDir',
  );
  rejectsField(() => parseExportBackendConfig({ kind: 'nbd-server', confDir: '/c', port: 0 }), 'port');
  rejectsField(() => parseExportBackendConfig({ kind: 'nbd-server', confDir: '/c', host: 'a b' }), 'host');
  rejectsField(() => parseExportBackendConfig({ kind: 'qemu', confDir: '/c' }), 'kind');
  assert.equal(parseExportBackendConfig({ kind: 'nbdkit-dir', exportsDir: '/e', port: '10810' }).port, 10810);
});

void test("one export's configuration is read where ensure writes it, and agrees with the full listing", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'vl-nbd-conf-'));
  try {
    const backends = [
      new NbdkitDirBackend({ exportsDir: path.join(root, 'exports'), host: '127.0.0.1', port: 10809 }),
      new NbdServerBackend({ confDir: path.join(root, 'conf.d'), host: '127.0.0.1', port: 10809 }),
    ];
    for (const b of backends) {
      assert.equal(await b.configured('migration-vol-a'), undefined, `${b.kind}: nothing yet`);
      await b.ensure({ exportName: 'migration-vol-a', targetPath: '/dev/mapper/a' });
      await b.ensure({ exportName: 'migration-vol-b', targetPath: '/dev/mapper/b' });
      const listed = await b.listConfigured();
      for (const name of ['migration-vol-a', 'migration-vol-b'])
        assert.deepEqual(
          await b.configured(name),
          listed.find((e) => e.exportName === name),
          `${b.kind}: ${name} as listed`,
        );
      assert.equal((await b.configured('migration-vol-b'))?.targetPath, '/dev/mapper/b');
      await b.remove('migration-vol-a');
      assert.equal(await b.configured('migration-vol-a'), undefined, `${b.kind}: removed`);
      await assert.rejects(
        b.configured('../etc/passwd'),
        (e: unknown) => e instanceof NbdValidationError && e.field === 'exportName',
      );
    }
    // Something that is not our symlink under an export name is not a configured export.
    await writeFile(path.join(root, 'exports', 'migration-vol-c'), 'not a link');
    assert.equal(await backends[0]!.configured('migration-vol-c'), undefined);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
