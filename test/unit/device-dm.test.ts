import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DmBusyError,
  DmCommandError,
  DmConflictError,
  DmInvalidTableError,
  DmNotFoundError,
  DmPermissionError,
  classifyDmFailure,
} from '../../src/device/dm-errors.js';
import { formatTable, parseInfoColumns, parseLs, parseTable } from '../../src/device/dm-parse.js';
import { DeviceMapper } from '../../src/device/devicemapper.js';
import type { CommandRunner } from '../../src/device/exec.js';

test('dm tables parse from dmsetup output and format back', () => {
  assert.deepEqual(parseTable('0 2097152 linear 254:16 0\n'), {
    kind: 'linear',
    sectors: 2097152,
    device: '254:16',
    offset: 0,
  });
  assert.deepEqual(parseTable('0 2097152 error\n'), { kind: 'error', sectors: 2097152 });
  assert.equal(parseTable('0 8 zero\n').kind, 'other');
  assert.equal(parseTable('0 8 linear 254:0 0\n8 8 linear 254:16 0\n').kind, 'other');
  assert.equal(
    formatTable({ kind: 'linear', sectors: 8, device: '254:16', offset: 0 }),
    '0 8 linear 254:16 0\n',
  );
  assert.equal(formatTable({ kind: 'error', sectors: 8 }), '0 8 error\n');
});

test('info columns and ls output (including "No devices found")', () => {
  assert.deepEqual(parseInfoColumns('pgtest3disk0|1|L--w|254|3|VOLLIFE-pgtest3disk0'), {
    name: 'pgtest3disk0',
    openCount: 1,
    suspended: false,
    major: 254,
    minor: 3,
    uuid: 'VOLLIFE-pgtest3disk0',
  });
  assert.equal(parseInfoColumns('x|0|Ls-w|254|0|').suspended, true);
  assert.deepEqual(parseLs('pgtest3disk0\t(254:3)\nvg0-root\t(254, 0)\n'), ['pgtest3disk0', 'vg0-root']);
  assert.deepEqual(parseLs('No devices found\n'), []);
});

test('dmsetup failures become typed errors with the right retryability', () => {
  const cases: [string, new (...a: never[]) => Error, boolean][] = [
    ['device-mapper: remove ioctl on pgtest3disk0  failed: Device or resource busy', DmBusyError, true],
    ['Device pgtest3disk0 not found', DmNotFoundError, false],
    [
      'device-mapper: reload ioctl on pgtest3disk0  failed: No such device or address',
      DmNotFoundError,
      false,
    ],
    ['device-mapper: reload ioctl on x  failed: Invalid argument', DmInvalidTableError, false],
    ['/dev/mapper/control: open failed: Permission denied', DmPermissionError, false],
    ['something new', DmCommandError, true],
  ];
  for (const [stderr, type, retryable] of cases) {
    const e = classifyDmFailure(['reload', 'x'], stderr, 1);
    assert.ok(e instanceof type, `${stderr} → ${e.name}`);
    assert.equal(e.retryable, retryable, stderr);
  }
});

/**
 * The DeviceMapper's decisions, driven by a scripted runner replaying dmsetup's real answers.
 * (The same class runs against a real kernel in test/lab.)
 */
function scripted(answers: Record<string, { stdout?: string; stderr?: string; exitCode?: number }[]>) {
  const calls: string[] = [];
  const runner: CommandRunner = {
    async run(file, args, opts) {
      const key = `${file} ${args[0]}`;
      calls.push(`${file} ${args.join(' ')}${opts?.input ? ` <<${opts.input.trim()}` : ''}`);
      const a = answers[key]?.shift() ?? { stdout: '', exitCode: 0 };
      return { stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode ?? 0 };
    },
  };
  return { runner, calls };
}
const exists = (table: string, uuid = 'VOLLIFE-vmdisk0') => [{ stdout: `vmdisk0|0|L--w|254|3|${uuid}\n` }];
const device = () => ({
  'stat -L': [{ stdout: 'fe:10:block special file\n' }],
  'blockdev --getsz': [{ stdout: '2097152\n' }],
});

test('ensureLinear: same table → unchanged; other table → reload + resume; missing → create with our UUID', async () => {
  let r = scripted({
    ...device(),
    'dmsetup info': exists(''),
    'dmsetup table': [{ stdout: '0 2097152 linear 254:16 0\n' }],
  });
  assert.deepEqual(
    (await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb')).changed,
    false,
  );
  assert.ok(!r.calls.some((c) => c.includes('reload') || c.includes('create')));

  r = scripted({
    ...device(),
    'dmsetup info': exists(''),
    'dmsetup table': [{ stdout: '0 2097152 error\n' }],
  });
  const changed = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
  assert.equal(changed.changed, true);
  assert.deepEqual(changed.previous, { kind: 'error', sectors: 2097152 });
  assert.ok(r.calls.includes('dmsetup reload vmdisk0 <<0 2097152 linear 254:16 0'));
  assert.ok(r.calls.includes('dmsetup resume vmdisk0'));

  r = scripted({
    ...device(),
    'dmsetup info': [{ stderr: 'Device does not exist.\nCommand failed.\n', exitCode: 1 }],
  });
  await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
  assert.ok(r.calls.includes('dmsetup create vmdisk0 --uuid VOLLIFE-vmdisk0 <<0 2097152 linear 254:16 0'));
});

test('a dm device that is not ours is never reloaded or removed', async () => {
  const r = scripted({
    ...device(),
    'dmsetup info': [...exists('', ''), ...exists('', '')],
    'dmsetup table': [{ stdout: '0 8 zero\n' }, { stdout: '0 8 zero\n' }],
  });
  const dm = new DeviceMapper({ runner: r.runner });
  await assert.rejects(dm.ensureLinear('vmdisk0', '/dev/vdb'), DmConflictError);
  await assert.rejects(dm.remove('vmdisk0'), DmConflictError);
  assert.ok(!r.calls.some((c) => /reload|remove vmdisk0|create/.test(c)));
});

test('remove: missing → success; busy → retries, then deferred removal', async () => {
  let r = scripted({ 'dmsetup info': [{ stderr: 'Device does not exist.', exitCode: 1 }] });
  assert.deepEqual(await new DeviceMapper({ runner: r.runner }).remove('vmdisk0'), {
    removed: false,
    deferred: false,
  });
  const busy = {
    stderr: 'device-mapper: remove ioctl on vmdisk0  failed: Device or resource busy',
    exitCode: 1,
  };
  r = scripted({
    'dmsetup info': [...exists(''), ...exists(''), ...exists('')],
    'dmsetup table': [{ stdout: '0 8 error\n' }, { stdout: '0 8 error\n' }, { stdout: '0 8 error\n' }],
    'dmsetup remove': [busy, busy, { exitCode: 0 }],
  });
  const out = await new DeviceMapper({ runner: r.runner, removeAttempts: 2, removeRetryDelayMs: 1 }).remove(
    'vmdisk0',
  );
  assert.deepEqual(out, { removed: true, deferred: true });
  assert.ok(r.calls.includes('dmsetup remove --deferred vmdisk0'));
});

test('names are validated before anything reaches dmsetup', async () => {
  const r = scripted({});
  const dm = new DeviceMapper({ runner: r.runner });
  for (const bad of ['../x', 'a/b', 'a b', 'x\n', '']) {
    await assert.rejects(dm.ensureError(bad, 8), /name/);
    await assert.rejects(dm.remove(bad), /name/);
  }
  assert.deepEqual(r.calls, []);
});

test('restoring a foreign device to the table it already has is a no-op, not a conflict', async () => {
  const r = scripted({ 'dmsetup info': exists('', ''), 'dmsetup table': [{ stdout: '0 8 zero\n' }] });
  const out = await new DeviceMapper({ runner: r.runner }).ensureTable('vmdisk0', {
    kind: 'other',
    sectors: 8,
    raw: '0 8 zero',
  });
  assert.equal(out.changed, false);
});
