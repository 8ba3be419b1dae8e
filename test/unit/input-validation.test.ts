/**
 * Input checks added for test/integration/bad-input.test.ts, at unit level: the disk-key range
 * on both forms, the device-path and dm-table schemas, the device-mapper's own refusal of a table
 * that would inject a segment (nothing reaches dmsetup), and the classification of validation
 * errors as non-retryable.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { classify } from '../../activities/failures.js';
import { buildApi } from '../../src/api/server.js';
import { DmInvalidTableError } from '../../src/device/dm-errors.js';
import { DeviceMapper } from '../../src/device/devicemapper.js';
import type { CommandRunner } from '../../src/command/runner.js';
import { devicePathSchema, dmTableSchema, type DmTable } from '../../src/device/types.js';
import { diskIndexFromKey } from '../../src/domain/naming.js';
import { attachRequest, diskIndex, diskKey } from '../../src/domain/operations.js';
import { NbdValidationError, validateExportName } from '../../src/nbd/validation.js';

describe('disk keys', () => {
  test('numbers and text are held to the same range, 2000..3024', () => {
    for (const ok of [2000, 2015, 3024, '2000', '3024', 'disk-2000', 'disk-3024'])
      assert.ok(diskKey.safeParse(ok).success, JSON.stringify(ok));
    for (const bad of [
      1999,
      3025,
      99999,
      '1999',
      '3025',
      '99999',
      'disk-99999',
      'disk-1999',
      'disk-',
      '',
      'abc',
    ])
      assert.ok(!diskKey.safeParse(bad).success, JSON.stringify(bad));
  });

  test('a refusal says what a disk key is, whatever the wrong value (1.5 included)', () => {
    for (const bad of [1.5, -1, true, null, 'disk-99999']) {
      const r = attachRequest.safeParse({ diskKey: bad });
      const issue = r.error?.issues.find((i) => i.path.join('.') === 'diskKey');
      assert.match(issue?.message ?? '', /VMware disk key from 2000 to 3024/, JSON.stringify(bad));
    }
  });

  test('diskIndexFromKey refuses keys above 3024; disk indexes run 0..1024', () => {
    assert.equal(diskIndexFromKey(3024), 1024);
    assert.equal(diskIndexFromKey(' disk-2001 '), 1);
    assert.throws(() => diskIndexFromKey(3025), /above 3024/);
    assert.throws(() => diskIndexFromKey('disk-99999'), /above 3024/);
    assert.throws(() => diskIndexFromKey(2000.5), /not a VMware disk key/);
    for (const ok of [0, 1024]) assert.ok(diskIndex.safeParse(ok).success);
    for (const bad of [-1, 1.5, 1025, Number.NaN]) assert.ok(!diskIndex.safeParse(bad).success, String(bad));
  });
});

describe('device paths and dm tables', () => {
  test('device paths: absolute, normalised, no blanks, no "..", no shell characters', () => {
    for (const ok of ['/dev/vdb', '/dev/loop0', '/dev/mapper/pgtest3disk0', '/run/lab/dev/vdc'])
      assert.ok(devicePathSchema.safeParse(ok).success, ok);
    for (const bad of [
      '/dev/../etc/passwd',
      '/dev/vda;rm',
      '/dev/vdb\n',
      '/dev/vd b',
      '/dev//vdb',
      '/dev/vdb/',
    ])
      assert.ok(!devicePathSchema.safeParse(bad).success, JSON.stringify(bad));
    for (const bad of ['vdb', '', '/', `/dev/${'x'.repeat(300)}`])
      assert.ok(!devicePathSchema.safeParse(bad).success, JSON.stringify(bad).slice(0, 40));
  });

  const linear = { kind: 'linear' as const, sectors: 2048, device: '254:16', offset: 0 };
  test('tables: each field checked, the failing one named', () => {
    for (const ok of [
      linear,
      { ...linear, device: '/dev/vdb' },
      { kind: 'error' as const, sectors: 8 },
      { kind: 'other' as const, sectors: 16, raw: '0 8 zero\n8 8 error ' },
    ])
      assert.ok(dmTableSchema.safeParse(ok).success, JSON.stringify(ok));
    const cases: [string, unknown][] = [
      ['device', { ...linear, device: '254:16 0\n2048 2048 linear 8:0' }],
      ['device', { ...linear, device: '254:16 0 extra' }],
      ['device', { ...linear, device: '/dev/vd b' }],
      ['sectors', { ...linear, sectors: 0 }],
      ['sectors', { ...linear, sectors: 1.5 }],
      ['offset', { ...linear, offset: -1 }],
      ['sectors', { kind: 'error', sectors: Number.NaN }],
      ['raw', { kind: 'other', sectors: 8, raw: '0 8 zero\n\u0000' }],
      ['raw', { kind: 'other', sectors: 8, raw: '' }],
      ['kind', { kind: 'crypt', sectors: 8 }],
    ];
    for (const [field, table] of cases) {
      const r = dmTableSchema.safeParse(table);
      assert.ok(!r.success, JSON.stringify(table));
      assert.equal(r.error.issues[0]?.path.join('.'), field, JSON.stringify(table));
    }
  });

  test('DeviceMapper refuses an injected table or device path before anything runs', async () => {
    const runs: string[] = [];
    const runner: CommandRunner = {
      async run(file, args) {
        runs.push([file, ...args].join(' '));
        return { stdout: '', stderr: 'Device does not exist.', exitCode: 1 };
      },
    };
    const dm = new DeviceMapper({ runner });
    for (const table of [
      { ...linear, device: '254:16 0\n2048 2048 linear 8:0' },
      { ...linear, device: '254:16 0 extra' },
      { ...linear, sectors: -1 },
      { ...linear, offset: 0.5 },
    ] as DmTable[])
      await assert.rejects(dm.ensureTable('pgtest3disk0', table), (e: unknown) => {
        assert.ok(e instanceof DmInvalidTableError && !e.retryable, String(e));
        assert.match(e.message, /^table\.(device|sectors|offset): /);
        return true;
      });
    for (const path of ['/dev/vdb\n', '/dev/../etc/passwd', 'vdb', '/dev/vda;rm'])
      await assert.rejects(dm.ensureLinear('pgtest3disk0', path), /^DmInvalidTableError: devicePath: /);
    assert.deepEqual(runs, []);
  });
});

describe('classification of validation errors', () => {
  test('NbdValidationError is not retryable and becomes a non-retryable failure naming the field', () => {
    let err: unknown;
    try {
      validateExportName('migration-vol-a/b');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof NbdValidationError && err.retryable === false);
    assert.throws(
      () => classify(err),
      (f: unknown) =>
        f instanceof ApplicationFailure && f.nonRetryable && /invalid exportName\b/.test(f.message),
    );
  });

  test('a ZodError from an argument object becomes InvalidInput naming the field path', () => {
    const r = dmTableSchema.safeParse({ kind: 'linear', sectors: 8, device: '1:2 3', offset: 0 });
    assert.ok(!r.success);
    assert.throws(
      () => classify(r.error),
      (f: unknown) =>
        f instanceof ApplicationFailure &&
        f.nonRetryable &&
        f.type === 'InvalidInput' &&
        /^invalid input: device: /.test(f.message),
    );
  });
});

describe('HTTP API', () => {
  test('an unknown route answers 404 in the API error shape', async () => {
    const app = await buildApi({
      volumes: {} as never,
      db: {} as never,
      applianceVmId: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
      token: 'unit',
    });
    try {
      for (const url of ['/api/v2/nope?x=1', '/nope']) {
        const r = await app.inject({ method: 'GET', url });
        assert.equal(r.statusCode, 404);
        assert.deepEqual(r.json(), {
          error: { code: 'not_found', message: `no route GET ${url.split('?')[0]}`, fields: [] },
        });
      }
    } finally {
      await app.close();
    }
  });
});
