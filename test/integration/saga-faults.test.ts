import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import mysql from 'mysql2/promise';
import { loadConfig } from '../../src/config/index.js';
import type { FaultInput } from '../../harness/cloudstack-sim/index.js';
import { assertCompletedState, auditOf, outcome } from '../support/saga-state.js';
import type { Saga } from '../support/saga-steps.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * Transient faults at every call a saga makes: each is retried and the saga completes, with
 * nothing compensated and the end state whole. CloudStack: every command each saga sends, found
 * by watching a clean run, fails once each way the simulator can (530, no reply, reply lost
 * after acting, the async job failing with 530). dmsetup: every dm step fails twice (ENOMEM, EBUSY).
 * Database: every connection is killed while a step waits to write. Permanent faults at every
 * step compensate: test/lab/saga-steps.lab.test.ts. Faults at the client level:
 * cloudstack-faults.test.ts.
 */
let s: StandinStack;
before(async () => {
  // Every case leaves a volume on the appliance or the target: lift CloudStack's 32-disk limit.
  s = await startStandinStack('faults', { requestTimeoutMs: 1_000, maxDataVolumes: 1_000 });
});
after(() => s?.close());

const SAGAS: Saga[] = ['attach', 'detach', 'failover', 'failback', 'delete'];
const ASYNC = new Set(['attachVolume', 'detachVolume']);
let disk = 0;
/** Requests of volumes prepared for an attach case (an attach starts from a bare volume). */
const pending = new Map<
  string,
  { applianceVmId: string; volumeId: string; sourceVmName: string; diskKey: number }
>();

/** A volume in the state the saga starts from, ready in parallel for many cases. */
async function prepared(saga: Saga, count: number): Promise<string[]> {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const volumeId = await s.createVolume();
      const attach = {
        applianceVmId: s.applianceVmId,
        volumeId,
        sourceVmName: 'faultvm',
        diskKey: 2000 + disk++,
      };
      if (saga === 'attach') {
        pending.set(volumeId, attach);
        return volumeId;
      }
      await (await s.volumes.attach(attach)).result();
      if (saga === 'failback')
        await (
          await s.volumes.failover({ applianceVmId: s.applianceVmId, volumeId, targetVmId: s.targetVmId })
        ).result();
      return volumeId;
    }),
  );
}

function run(saga: Saga, volumeId: string) {
  const base = { applianceVmId: s.applianceVmId, volumeId };
  return {
    attach: () => s.volumes.attach(pending.get(volumeId)!),
    failover: () => s.volumes.failover({ ...base, targetVmId: s.targetVmId }),
    failback: () => s.volumes.failback(base),
    detach: () => s.volumes.detach(base),
    delete: () => s.volumes.delete(base),
  }[saga]();
}

async function runToCompletion(saga: Saga, volumeId: string) {
  const r = await outcome(await run(saga, volumeId), s.db.pool);
  await assertCompletedState(s, saga, volumeId, r);
  return r;
}

for (const saga of SAGAS) {
  describe(`${saga}: CloudStack faults at every call`, () => {
    let commands: string[] = [];
    let volumes: string[] = [];
    const kindsOf = (c: string): FaultInput['kind'][] =>
      ASYNC.has(c) ? ['error', 'timeout', 'lost-reply', 'job-error'] : ['error', 'timeout', 'lost-reply'];
    before(async () => {
      // The calls this saga makes, from a clean run.
      const [clean] = await prepared(saga, 1);
      const from = s.sim.sim.requests.length;
      await runToCompletion(saga, clean!);
      commands = [...new Set(s.sim.sim.requests.slice(from).map((r) => r.command))].sort();
      const cases = commands.reduce((n, c) => n + kindsOf(c).length, 0);
      volumes = await prepared(saga, cases);
    });

    test('the calls it makes include its CloudStack action', (t) => {
      t.diagnostic(`${saga} calls: ${commands.join(', ')}`);
      const action = { attach: 'attachVolume', failback: 'attachVolume', delete: 'deleteVolume' }[
        saga as string
      ];
      assert.ok(commands.includes(action ?? 'detachVolume'), commands.join(' '));
    });

    test('each call failing once, each way: retried, the saga completes, nothing compensated', async () => {
      let i = 0;
      const missed: string[] = [];
      for (const command of commands) {
        for (const kind of kindsOf(command)) {
          const volumeId = volumes[i++]!;
          s.sim.sim.faults.inject({ command, kind, count: 1 });
          try {
            await runToCompletion(saga, volumeId);
          } catch (err) {
            const cause = (err as { cause?: { message?: string } }).cause?.message ?? '';
            assert.fail(`${command} ${kind}: ${String(err)} ${cause}`);
          }
          // The fault met a call of this saga (not left for the next case).
          if (s.sim.sim.faults.pending().length) missed.push(`${command}/${kind}`);
          s.sim.sim.faults.clear();
        }
      }
      assert.deepEqual(missed, [], 'every injected fault hit a call');
    });
  });
}

describe('dmsetup failing transiently at each dm step', () => {
  // Transient as the kernel reports it: create — out of memory (its EBUSY means "name or uuid
  // taken", a conflict the device layer decides on); reload and remove — the device is busy.
  const cases: [Saga, string, string][] = [
    ['attach', 'create', 'Cannot allocate memory'],
    ['detach', 'reload', 'Device or resource busy'],
    ['failover', 'reload', 'Device or resource busy'],
    ['failback', 'reload', 'Device or resource busy'],
    ['delete', 'remove', 'Device or resource busy'],
  ];
  for (const [saga, cmd, errno] of cases) {
    test(`${saga}: "dmsetup ${cmd}" failing twice (${errno}) is retried; the saga completes`, async () => {
      const [volumeId] = await prepared(saga, 1);
      const dm = s.appliances[0]!.dm;
      dm.failNext(cmd, 2, `device-mapper: ${cmd} ioctl on faultvm failed: ${errno}\nCommand failed.\n`);
      try {
        await runToCompletion(saga, volumeId!);
        assert.equal(dm.pendingFaults(), 0, `both "dmsetup ${cmd}" failures were met`);
      } finally {
        dm.clearFaults();
      }
    });
  }
});

test('every database connection killed while a step waits to write: retried, the attach completes', async () => {
  const [volumeId] = await prepared('attach', 1);
  const id = `db-drop-${volumeId!.slice(0, 8)}`;
  await s.failpoints.arm({
    id,
    workflowId: `volume:${volumeId}`,
    activityType: 'dbUpdateMapping',
    action: 'hold',
  });
  const h = await run('attach', volumeId!);
  let ended = false;
  void h.result().then(
    () => (ended = true),
    () => (ended = true),
  );
  while (!(await s.failpoints.held(id))) {
    if (ended)
      assert.fail(
        `the attach ended before reaching record-mapping: ${String(await h.result().catch((e: unknown) => e))}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }

  const cfg = loadConfig();
  const admin = await mysql.createConnection({
    host: cfg.DB_HOST,
    port: cfg.DB_PORT,
    user: cfg.DB_USER,
    password: cfg.DB_PASSWORD,
  });
  try {
    const [rows] = await admin.query<mysql.RowDataPacket[]>(
      'SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()',
      [s.db.name],
    );
    assert.ok(rows.length > 0, 'the workers hold connections to kill');
    for (const r of rows) await admin.query('KILL CONNECTION ?', [r.id]);
  } finally {
    await admin.end();
  }
  await s.failpoints.release(id);
  const r = await outcome(h, s.db.pool);
  await assertCompletedState(s, 'attach', volumeId!, r);
  const { steps } = await auditOf(s, volumeId!, 'attach');
  assert.ok(steps.includes('forward:record-mapping:completed'), steps.join(' '));
});
