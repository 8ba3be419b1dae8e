/**
 * Device-mapper LOGIC tests: the parsers and the error classifier on dmsetup's real output
 * (strings captured from dmsetup 1.02.185 / driver 4.47.0 on Debian's 6.1 kernel in the
 * appliance lab), and the DeviceMapper's decisions driven by a scripted CommandRunner that
 * replays those answers. No kernel is involved here; test/lab/device-dm.lab.test.ts runs the
 * same class against a real device-mapper.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DmBusyError,
  DmCommandError,
  DmConflictError,
  DmInvalidTableError,
  DmNotFoundError,
  DmPermissionError,
  classifyDmFailure,
} from '../../src/device/dm-errors.js';
import {
  formatTable,
  parseInfoColumns,
  parseLs,
  parseStatDevNumber,
  parseTable,
  sameTable,
} from '../../src/device/dm-parse.js';
import { DeviceMapper } from '../../src/device/devicemapper.js';
import type { CommandResult, CommandRunner } from '../../src/command/runner.js';

/** Real dmsetup answers (stdout/stderr exactly as printed). */
const REAL = {
  tableLinear: '0 32768 linear 7:0 0\n',
  tableError: '0 32768 error \n', // dm prints the error target with a trailing blank
  infoLive: 'tst1|0|L--w|253|0|VOLLIFE-tst1\n',
  infoForeign: 'tst2|0|L--w|253|1|\n',
  infoReloaded: 'tst1|0|LI-w|253|0|VOLLIFE-tst1\n',
  infoSuspendedReloaded: 'tst1|0|LIsw|253|0|VOLLIFE-tst1\n',
  infoOpen: 'tst2|1|L--w|253|1|\n',
  ls: 'tst1\t(253:0)\ntst2\t(253:1)\n',
  noDevices: 'No devices found\n',
  infoMissing: 'Device does not exist.\nCommand failed.\n',
  tableMissing: 'device-mapper: table ioctl on nosuch  failed: No such device or address\nCommand failed.\n',
  removeMissing:
    'device-mapper: remove ioctl on nosuch  failed: No such device or address\nCommand failed.\n',
  removeBusy: 'device-mapper: remove ioctl on tst2  failed: Device or resource busy\nCommand failed.\n',
  createExists:
    'device-mapper: create ioctl on tst1 VOLLIFE-tst1 failed: Device or resource busy\nCommand failed.\n',
  reloadBadTarget: 'device-mapper: reload ioctl on tst1  failed: Invalid argument\nCommand failed.\n',
  reloadGarbage: 'Invalid format on line 1 of table on stdin.\nCommand failed.\n',
  permission:
    '/dev/mapper/control: open failed: Permission denied\nFailure to communicate with kernel device-mapper driver.\n' +
    'Incompatible libdevmapper 1.02.185 (2022-05-18) and kernel driver (unknown version).\nCommand failed.\n',
  statLoop0: '7:0:block special file\n',
  statVdb: 'fe:10:block special file\n', // hex: 254:16
};

describe('dmsetup output parsers', () => {
  test('table lines: linear, error (with its trailing blank), other, multi-segment', () => {
    assert.deepEqual(parseTable(REAL.tableLinear), {
      kind: 'linear',
      sectors: 32768,
      device: '7:0',
      offset: 0,
    });
    assert.deepEqual(parseTable(REAL.tableError), { kind: 'error', sectors: 32768 });
    assert.deepEqual(parseTable('0 2097152 linear 254:16 0\n'), {
      kind: 'linear',
      sectors: 2097152,
      device: '254:16',
      offset: 0,
    });
    assert.equal(parseTable('0 8 zero\n').kind, 'other');
    const multi = parseTable('0 8 linear 254:0 0\n8 8 linear 254:16 0\n');
    assert.equal(multi.kind, 'other');
    assert.equal(multi.sectors, 16);
    assert.equal(
      formatTable({ kind: 'linear', sectors: 8, device: '254:16', offset: 0 }),
      '0 8 linear 254:16 0\n',
    );
    assert.equal(formatTable({ kind: 'error', sectors: 8 }), '0 8 error\n');
    assert.ok(
      sameTable(
        { kind: 'other', sectors: 8, raw: '0 8 zero ' },
        { kind: 'other', sectors: 8, raw: '0  8 zero\n' },
      ),
    );
    assert.ok(
      !sameTable(parseTable(REAL.tableLinear), { kind: 'linear', sectors: 32768, device: '7:1', offset: 0 }),
    );
  });

  test('info columns: attr is (L)ive (I)nactive (s)uspended (r|w)', () => {
    assert.deepEqual(parseInfoColumns(REAL.infoLive), {
      name: 'tst1',
      openCount: 0,
      liveTable: true,
      inactiveTable: false,
      suspended: false,
      readOnly: false,
      major: 253,
      minor: 0,
      uuid: 'VOLLIFE-tst1',
    });
    const reloaded = parseInfoColumns(REAL.infoReloaded);
    assert.equal(reloaded.inactiveTable, true);
    assert.equal(reloaded.suspended, false, 'the I of a pending reload is not "suspended"');
    const both = parseInfoColumns(REAL.infoSuspendedReloaded);
    assert.equal(both.suspended, true);
    assert.equal(both.inactiveTable, true);
    assert.equal(parseInfoColumns('x|0|L-sw|254|0|').suspended, true);
    assert.equal(parseInfoColumns(REAL.infoOpen).openCount, 1);
    assert.equal(parseInfoColumns(REAL.infoForeign).uuid, '');
    assert.throws(() => parseInfoColumns(REAL.noDevices), /unexpected dmsetup info line/);
  });

  test('ls, including "No devices found" (printed on stdout with exit 0)', () => {
    assert.deepEqual(parseLs(REAL.ls), ['tst1', 'tst2']);
    assert.deepEqual(parseLs('vg0-root\t(254, 0)\n'), ['vg0-root']);
    assert.deepEqual(parseLs(REAL.noDevices), []);
  });

  test('stat prints major:minor in hex; tables print decimal', () => {
    assert.deepEqual(parseStatDevNumber(REAL.statVdb), { devNumber: '254:16', type: 'block special file' });
    assert.equal(parseStatDevNumber(REAL.statLoop0).devNumber, '7:0');
    assert.equal(parseStatDevNumber('103:1a:block special file').devNumber, '259:26');
    assert.throws(() => parseStatDevNumber('garbage'));
  });
});

test('dmsetup failures become typed errors with the right retryability', () => {
  const cases: [string, new (...a: never[]) => Error, boolean][] = [
    [REAL.removeBusy, DmBusyError, true],
    [REAL.createExists, DmBusyError, true],
    ['Device pgtest3disk0 not found', DmNotFoundError, false],
    [REAL.tableMissing, DmNotFoundError, false],
    [REAL.removeMissing, DmNotFoundError, false],
    [REAL.reloadBadTarget, DmInvalidTableError, false],
    [REAL.reloadGarbage, DmInvalidTableError, false],
    [REAL.permission, DmPermissionError, false],
    ['something new', DmCommandError, true],
    ['device-mapper: create ioctl on pgtest3disk0 failed: Cannot allocate memory', DmCommandError, true],
    [
      'device-mapper: reload ioctl on pgtest3disk0 failed: Resource temporarily unavailable',
      DmCommandError,
      true,
    ],
  ];
  for (const [stderr, type, retryable] of cases) {
    const e = classifyDmFailure(['reload', 'x'], stderr, 1);
    assert.ok(e instanceof type, `${stderr} → ${e.name}`);
    assert.equal(e.retryable, retryable, stderr);
    assert.match(e.message, /^dmsetup reload x: /);
  }
});

/**
 * A runner replaying answers per `<file> <first arg>` key, recording every call (with stdin).
 * Unscripted calls succeed silently (create/reload/resume/message print nothing on success).
 */
type Answer = Partial<CommandResult>;
function scripted(answers: Record<string, Answer[]>) {
  const calls: string[] = [];
  const runner: CommandRunner = {
    async run(file, args, opts) {
      const key = `${file} ${args[0]}`;
      calls.push(`${file} ${args.join(' ')}${opts?.input ? ` <<${opts.input.trim()}` : ''}`);
      const a = answers[key]?.shift() ?? {};
      return { stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode ?? 0 };
    },
  };
  return {
    runner,
    calls,
    mutations: () =>
      calls.filter((c) => /dmsetup (create|reload|resume|remove|clear|suspend)|blockdev --flushbufs/.test(c)),
  };
}
const info = (attr = 'L--w', uuid = 'VOLLIFE-vmdisk0', open = 0): Answer => ({
  stdout: `vmdisk0|${open}|${attr}|253|3|${uuid}\n`,
});
const missing: Answer = { stderr: REAL.infoMissing, exitCode: 1 };
const vdb = () => ({
  'stat -L': [{ stdout: REAL.statVdb }],
  'blockdev --getsz': [{ stdout: '2097152\n' }],
});
const LINEAR_VDB = '0 2097152 linear 254:16 0\n';

describe('DeviceMapper decisions on replayed dmsetup answers', () => {
  test('ensureLinear on a device that already has the wanted table: unchanged, nothing mutated', async () => {
    const r = scripted({ ...vdb(), 'dmsetup info': [info()], 'dmsetup table': [{ stdout: LINEAR_VDB }] });
    const out = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
    assert.equal(out.changed, false);
    assert.deepEqual(r.mutations(), []);
    // The wanted device was resolved to major:minor (stat's hex fe:10 → 254:16), not compared as a path.
    assert.ok(r.calls.includes('stat -L -c %t:%T:%F /dev/vdb'));
  });

  test('ensureLinear over another table: reload + resume, returning the previous table', async () => {
    const r = scripted({
      ...vdb(),
      'dmsetup info': [info()],
      'dmsetup table': [{ stdout: '0 2097152 error \n' }],
    });
    const out = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
    assert.deepEqual(out, { changed: true, previous: { kind: 'error', sectors: 2097152 } });
    // The page cache of the old table is dropped after the swap: a held NBD client reads the new one.
    assert.deepEqual(r.mutations(), [
      'dmsetup reload vmdisk0 <<0 2097152 linear 254:16 0',
      'dmsetup resume vmdisk0',
      'blockdev --flushbufs /dev/mapper/vmdisk0',
    ]);
    assert.ok(r.calls.includes('dmsetup message vmdisk0 0 @cancel_deferred_remove'));
  });

  test('a swap whose cache drop failed: the retry, finding the table already wanted, drops it then', async () => {
    const r = scripted({
      'stat -L': [...vdb()['stat -L'], ...vdb()['stat -L']],
      'blockdev --getsz': [...vdb()['blockdev --getsz'], ...vdb()['blockdev --getsz']],
      'dmsetup info': [info('L--w', 'VOLLIFE-vmdisk0', 1), info('L--w', 'VOLLIFE-vmdisk0', 1)],
      'dmsetup table': [{ stdout: '0 2097152 error \n' }, { stdout: LINEAR_VDB }],
      'blockdev --flushbufs': [
        { stderr: 'blockdev: ioctl error on BLKFLSBUF: Device or resource busy', exitCode: 1 },
      ],
    });
    const dm = new DeviceMapper({ runner: r.runner });
    await assert.rejects(dm.ensureLinear('vmdisk0', '/dev/vdb'), /flushbufs/);
    // Held open (an NBD client): the retry finds the new table and still drops the old one's cache.
    assert.equal((await dm.ensureLinear('vmdisk0', '/dev/vdb')).changed, false);
    assert.deepEqual(r.mutations(), [
      'dmsetup reload vmdisk0 <<0 2097152 linear 254:16 0',
      'dmsetup resume vmdisk0',
      'blockdev --flushbufs /dev/mapper/vmdisk0',
      'blockdev --flushbufs /dev/mapper/vmdisk0',
    ]);
  });

  test('ensureLinear on a missing device: create with our UUID, table on stdin', async () => {
    const r = scripted({ ...vdb(), 'dmsetup info': [missing] });
    const out = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
    assert.deepEqual(out, { changed: true });
    assert.deepEqual(r.mutations(), [
      'dmsetup create vmdisk0 --uuid VOLLIFE-vmdisk0 <<0 2097152 linear 254:16 0',
    ]);
  });

  test('create racing a retried attempt of itself converges; a taken UUID is a conflict', async () => {
    let r = scripted({
      ...vdb(),
      'dmsetup info': [missing, info(), info()],
      'dmsetup table': [{ stdout: LINEAR_VDB }, { stdout: LINEAR_VDB }],
      'dmsetup create': [{ stderr: REAL.createExists, exitCode: 1 }],
    });
    assert.equal(
      (await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb')).changed,
      false,
    );

    r = scripted({
      ...vdb(),
      'dmsetup info': [missing, missing],
      'dmsetup create': [{ stderr: REAL.createExists, exitCode: 1 }],
    });
    await assert.rejects(
      new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb'),
      (e: unknown) => {
        assert.ok(e instanceof DmConflictError);
        assert.equal(e.retryable, false);
        assert.match(e.message, /uuid VOLLIFE-vmdisk0/);
        return true;
      },
    );
  });

  test('a reload left without its resume (LI-w) with the live table already wanted: clear, no resume', async () => {
    const r = scripted({
      ...vdb(),
      'dmsetup info': [info('LI-w')],
      'dmsetup table': [{ stdout: LINEAR_VDB }],
    });
    const out = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
    assert.equal(out.changed, false);
    assert.deepEqual(r.mutations(), ['dmsetup clear vmdisk0']);
  });

  test('suspended with a stale inactive table (LIsw): clear before resume, so the stale table never goes live', async () => {
    const r = scripted({
      ...vdb(),
      'dmsetup info': [info('LIsw')],
      'dmsetup table': [{ stdout: LINEAR_VDB }],
    });
    const out = await new DeviceMapper({ runner: r.runner }).ensureLinear('vmdisk0', '/dev/vdb');
    assert.equal(out.changed, true);
    assert.deepEqual(r.mutations(), ['dmsetup clear vmdisk0', 'dmsetup resume vmdisk0']);
  });

  test('ensureError: error target of the given size; again → unchanged', async () => {
    let r = scripted({ 'dmsetup info': [info()], 'dmsetup table': [{ stdout: LINEAR_VDB }] });
    const dm = () => new DeviceMapper({ runner: r.runner });
    const out = await dm().ensureError('vmdisk0', 2097152);
    assert.deepEqual(out.previous, { kind: 'linear', sectors: 2097152, device: '254:16', offset: 0 });
    assert.deepEqual(r.mutations(), [
      'dmsetup reload vmdisk0 <<0 2097152 error',
      'dmsetup resume vmdisk0',
      'blockdev --flushbufs /dev/mapper/vmdisk0',
    ]);
    r = scripted({ 'dmsetup info': [info()], 'dmsetup table': [{ stdout: '0 2097152 error \n' }] });
    assert.equal((await dm().ensureError('vmdisk0', 2097152)).changed, false);
    assert.deepEqual(r.mutations(), []);
    await assert.rejects(dm().ensureError('vmdisk0', 0), DmInvalidTableError);
  });

  test('ensureTable restores a previous table given with a device path (resolved to major:minor)', async () => {
    const r = scripted({
      ...vdb(),
      'dmsetup info': [info()],
      'dmsetup table': [{ stdout: '0 2097152 error \n' }],
    });
    await new DeviceMapper({ runner: r.runner }).ensureTable('vmdisk0', {
      kind: 'linear',
      sectors: 2097152,
      device: '/dev/vdb',
      offset: 0,
    });
    assert.ok(r.calls.includes('dmsetup reload vmdisk0 <<0 2097152 linear 254:16 0'));
  });

  test('a dm device that is not ours is never reloaded or removed', async () => {
    const r = scripted({
      ...vdb(),
      'dmsetup info': [info('L--w', ''), info('L--w', '')],
      'dmsetup table': [{ stdout: '0 8 zero\n' }, { stdout: '0 8 zero\n' }],
    });
    const dm = new DeviceMapper({ runner: r.runner });
    await assert.rejects(dm.ensureLinear('vmdisk0', '/dev/vdb'), DmConflictError);
    await assert.rejects(dm.remove('vmdisk0'), DmConflictError);
    assert.deepEqual(r.mutations(), []);
  });

  test('restoring a foreign device to the table it already has is a no-op, not a conflict', async () => {
    const r = scripted({ 'dmsetup info': [info('L--w', '')], 'dmsetup table': [{ stdout: '0 8 zero\n' }] });
    const out = await new DeviceMapper({ runner: r.runner }).ensureTable('vmdisk0', {
      kind: 'other',
      sectors: 8,
      raw: '0 8 zero',
    });
    assert.equal(out.changed, false);
    assert.deepEqual(r.mutations(), []);
  });

  test('an invalid table from the kernel is a non-retryable DmInvalidTableError', async () => {
    const r = scripted({
      'dmsetup info': [info()],
      'dmsetup table': [{ stdout: LINEAR_VDB }],
      'dmsetup reload': [{ stderr: REAL.reloadBadTarget, exitCode: 1 }],
    });
    await assert.rejects(
      new DeviceMapper({ runner: r.runner }).ensureTable('vmdisk0', {
        kind: 'other',
        sectors: 8,
        raw: '0 8 bogus',
      }),
      (e: unknown) => e instanceof DmInvalidTableError && !e.retryable,
    );
    assert.ok(!r.calls.includes('dmsetup resume vmdisk0'));
  });

  test('a missing /dev/vdX is DmNotFoundError; a non-block file is DmInvalidTableError', async () => {
    let r = scripted({
      'stat -L': [{ stderr: "stat: cannot statx '/dev/vdz': No such file or directory\n", exitCode: 1 }],
    });
    await assert.rejects(new DeviceMapper({ runner: r.runner }).deviceNumber('/dev/vdz'), DmNotFoundError);
    r = scripted({ 'stat -L': [{ stdout: '0:0:regular empty file\n' }] });
    await assert.rejects(new DeviceMapper({ runner: r.runner }).deviceNumber('/tmp/x'), DmInvalidTableError);
  });

  test('remove: missing → success without a remove call', async () => {
    const r = scripted({ 'dmsetup info': [missing] });
    assert.deepEqual(await new DeviceMapper({ runner: r.runner }).remove('vmdisk0'), {
      removed: false,
      deferred: false,
    });
    assert.deepEqual(r.mutations(), []);
  });

  test('remove: busy → retries, then deferred removal while it is still held', async () => {
    const busy = { stderr: REAL.removeBusy, exitCode: 1 };
    const r = scripted({
      'dmsetup info': [info('L--w', undefined, 1), info('L--w', undefined, 1), info('L--w', undefined, 1)],
      'dmsetup table': [{ stdout: LINEAR_VDB }, { stdout: LINEAR_VDB }, { stdout: LINEAR_VDB }],
      'dmsetup remove': [busy, busy, {}],
    });
    const out = await new DeviceMapper({ runner: r.runner, removeAttempts: 2, removeRetryDelayMs: 1 }).remove(
      'vmdisk0',
    );
    assert.deepEqual(out, { removed: true, deferred: true });
    assert.deepEqual(r.mutations(), [
      'dmsetup remove vmdisk0',
      'dmsetup remove vmdisk0',
      'dmsetup remove --deferred vmdisk0',
    ]);
  });

  test('remove: busy once, then free → plain removal', async () => {
    const r = scripted({
      'dmsetup info': [info(), info()],
      'dmsetup table': [{ stdout: LINEAR_VDB }, { stdout: LINEAR_VDB }],
      'dmsetup remove': [{ stderr: REAL.removeBusy, exitCode: 1 }, {}],
    });
    const out = await new DeviceMapper({ runner: r.runner, removeAttempts: 3, removeRetryDelayMs: 1 }).remove(
      'vmdisk0',
    );
    assert.deepEqual(out, { removed: true, deferred: false });
  });

  test('remove racing another remover: "No such device or address" is success', async () => {
    const r = scripted({
      'dmsetup info': [info()],
      'dmsetup table': [{ stdout: LINEAR_VDB }],
      'dmsetup remove': [{ stderr: REAL.removeMissing, exitCode: 1 }],
    });
    assert.deepEqual(await new DeviceMapper({ runner: r.runner }).remove('vmdisk0'), {
      removed: false,
      deferred: false,
    });
  });

  test('permission problems surface as non-retryable DmPermissionError', async () => {
    const r = scripted({ 'dmsetup info': [{ stderr: REAL.permission, exitCode: 1 }] });
    await assert.rejects(
      new DeviceMapper({ runner: r.runner }).ensureError('vmdisk0', 8),
      (e: unknown) => e instanceof DmPermissionError && !e.retryable,
    );
  });

  test('list: names from dmsetup ls; "No devices found" → []', async () => {
    let r = scripted({ 'dmsetup ls': [{ stdout: REAL.ls }] });
    assert.deepEqual(await new DeviceMapper({ runner: r.runner }).list(), ['tst1', 'tst2']);
    r = scripted({ 'dmsetup ls': [{ stdout: REAL.noDevices }] });
    assert.deepEqual(await new DeviceMapper({ runner: r.runner }).list(), []);
  });

  test('info: reads attr correctly and survives the device vanishing between its two calls', async () => {
    let r = scripted({ 'dmsetup info': [info('LIsw')], 'dmsetup table': [{ stdout: LINEAR_VDB }] });
    const i = await new DeviceMapper({ runner: r.runner }).info('vmdisk0');
    assert.equal(i?.suspended, true);
    assert.equal(i?.inactiveTable, true);
    r = scripted({ 'dmsetup info': [info()], 'dmsetup table': [{ stderr: REAL.tableMissing, exitCode: 1 }] });
    assert.equal(await new DeviceMapper({ runner: r.runner }).info('vmdisk0'), undefined);
  });

  test('names are validated with persistentNameSchema before anything reaches dmsetup', async () => {
    const r = scripted({});
    const dm = new DeviceMapper({ runner: r.runner });
    for (const bad of ['../x', 'a/b', 'a b', 'x\n', '', 'UPPER', '-lead', 'x'.repeat(65)]) {
      await assert.rejects(dm.ensureError(bad, 8), /^DmInvalidTableError: name: /);
      await assert.rejects(dm.remove(bad), /name: /);
      await assert.rejects(dm.ensureLinear(bad, '/dev/vdb'), /name: /);
    }
    assert.deepEqual(
      r.calls.filter((c) => c.startsWith('dmsetup')),
      [],
    );
  });
});
