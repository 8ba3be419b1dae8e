import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CommandRunner } from '../../src/command/runner.js';
import { classifyProbeError, listExports, nbdUri, probeExport } from '../../src/nbd/nbdinfo.js';

/** Message texts as printed by nbdinfo 1.14 / qemu-img 7.2 (docs/nbd-servers.md, "What clients print"). */
const texts = {
  unknown:
    "nbdinfo: nbd_connect_uri: handshake: server has no export named 'nosuch': No such file or directory",
  qemuUnknown:
    "qemu-img: Could not open 'nbd://127.0.0.1:20809/nosuch': Requested export not available\nserver reported: Export unknown",
  qsdUnknown: "server reported: export 'migration-vol-vol1' not present",
  denied: 'nbdinfo: nbd_connect_uri: handshake: server policy prevents NBD_OPT_GO',
  qemuDenied:
    "qemu-img: Could not open 'nbd://127.0.0.1:20809/ghost': Denied by server for option 7 (go)\nserver reported: Access denied by server configuration",
  reset: 'nbdinfo: nbd_connect_uri: recv: Connection reset by peer',
  refused:
    'nbdinfo: nbd_connect_uri: connect: 127.0.0.1:20809: could not connect to remote host: Connection refused',
  misleading: 'nbdinfo: nbd_opt_go: server replied with error to opt_go request: Operation not supported',
};

void test('probe errors are classified from real nbdinfo / qemu texts', () => {
  assert.equal(classifyProbeError(texts.unknown), 'unknown-export');
  assert.equal(classifyProbeError(texts.qemuUnknown), 'unknown-export');
  assert.equal(classifyProbeError(texts.qsdUnknown), 'unknown-export');
  assert.equal(classifyProbeError(texts.denied), 'access-denied');
  assert.equal(classifyProbeError(texts.qemuDenied), 'access-denied');
  assert.equal(classifyProbeError(texts.reset), 'connection-failed');
  assert.equal(classifyProbeError(texts.refused), 'connection-failed');
  // nbdinfo's *full* mode after a GO failure says "Operation not supported": not classifiable.
  assert.equal(classifyProbeError(texts.misleading), 'other');
});

function fakeRunner(answers: Record<string, { stdout?: string; stderr?: string; exitCode: number }>): {
  runner: CommandRunner;
  calls: string[][];
} {
  const calls: string[][] = [];
  return {
    calls,
    runner: {
      run(file, args) {
        calls.push([file, ...args]);
        const a = answers[args.join(' ')];
        if (!a) throw new Error(`unexpected call ${file} ${args.join(' ')}`);
        return Promise.resolve({ stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode });
      },
    },
  };
}

void test('probeExport runs `nbdinfo --size URI` as argv and maps the answer', async () => {
  const ep = { host: '127.0.0.1', port: 10809 };
  const { runner, calls } = fakeRunner({
    '--size nbd://127.0.0.1:10809/migration-vol-a': { stdout: '1048576\n', exitCode: 0 },
    '--size nbd://127.0.0.1:10809/migration-vol-ghost': { stderr: texts.denied + '\n', exitCode: 1 },
  });
  assert.deepEqual(await probeExport(ep, 'migration-vol-a', { runner }), { ok: true, sizeBytes: 1048576 });
  assert.deepEqual(await probeExport(ep, 'migration-vol-ghost', { runner }), {
    ok: false,
    reason: 'access-denied',
    message: texts.denied,
  });
  assert.deepEqual(calls[0], ['nbdinfo', '--size', 'nbd://127.0.0.1:10809/migration-vol-a']);
});

void test('listExports parses `nbdinfo --list --json`; sizes only when asked (nbd-server reports 0)', async () => {
  const json = JSON.stringify({
    protocol: 'newstyle-fixed',
    exports: [
      { 'export-name': 'migration-vol-a', 'export-size': 0 },
      { 'export-name': 'migration-vol-b', 'export-size': 0 },
    ],
  });
  const ep = { host: '127.0.0.1', port: 1 };
  const { runner } = fakeRunner({ '--list --json nbd://127.0.0.1:1': { stdout: json, exitCode: 0 } });
  assert.deepEqual(await listExports(ep, { runner }), [
    { exportName: 'migration-vol-a' },
    { exportName: 'migration-vol-b' },
  ]);
  assert.deepEqual((await listExports(ep, { runner, withSizes: true }))[0], {
    exportName: 'migration-vol-a',
    sizeBytes: 0,
  });
  const down = fakeRunner({ '--list --json nbd://127.0.0.1:1': { stderr: texts.refused, exitCode: 1 } });
  await assert.rejects(listExports(ep, { runner: down.runner }), (e: Error & { reason?: string }) => {
    assert.equal(e.reason, 'connection-failed');
    return true;
  });
});

void test('nbd URIs bracket IPv6 and encode the name', () => {
  assert.equal(nbdUri({ host: '::1', port: 10809 }, 'migration-vol-a'), 'nbd://[::1]:10809/migration-vol-a');
  assert.equal(nbdUri({ host: '127.0.0.1', port: 1 }), 'nbd://127.0.0.1:1');
  assert.equal(nbdUri({ host: 'h', port: 1 }, 'a b'), 'nbd://h:1/a%20b');
});
