import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { InvalidRequestError } from '../../src/client/index.js';
import { getMapping } from '../../src/db/mappings.js';
import { auditOf, expectFailure } from '../support/saga-state.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';

/**
 * The naming rule through the saga, as a caller meets it (real Temporal, MariaDB, simulator and
 * workers over a stood-in appliance kernel): refusals name the caller's key and the other party,
 * are permanent (no retry loop), change nothing, and are audited as `refused`. The rule itself
 * is proven fast in test/unit/naming.test.ts and against the database in db-naming.test.ts.
 */
let s: StandinStack;
before(async () => (s = await startStandinStack('namingsagas')));
after(() => s?.close());

const attach = (volumeId: string, naming: { sourceVmName?: string; diskKey?: number | string } = {}) =>
  s.volumes.attach({ applianceVmId: s.applianceVmId, volumeId, ...naming });

test('a second volume for the same VM disk is refused at once, naming the key and the holder; nothing changed', async () => {
  const first = await s.createVolume();
  const r = await (await attach(first, { sourceVmName: 'PG_TEST3', diskKey: 2001 })).result();
  assert.match(r.access!.persistentName, /^pgtest3-[0-9a-f]{20}disk1$/);
  assert.equal(r.access!.mapperPath, `/dev/mapper/${r.access!.persistentName}`);

  const second = await s.createVolume();
  const t0 = Date.now();
  // ' PG_TEST3 ' is PG_TEST3 once trimmed: the same VM, the same disk.
  await expectFailure(
    (await attach(second, { sourceVmName: ' PG_TEST3 ', diskKey: 'disk-2001' })).result(),
    new RegExp(`VM "PG_TEST3" disk key 2001 \\(disk 1\\) is already mapped to volume ${first}`),
  );
  assert.ok(Date.now() - t0 < 15_000, `permanent, not retried (${Date.now() - t0} ms)`);
  const { op, steps } = await auditOf(s, second, 'attach');
  assert.equal(op.status, 'refused');
  assert.ok(steps.includes('forward:assign-name:failed'));
  assert.equal(await getMapping(s.db.pool, second), undefined, 'no row');
  assert.equal((await s.cs.getVolume(second))?.virtualmachineid, undefined, 'never attached');
});

test('a re-attach under another VM name is refused naming both; the same request again is idempotent', async () => {
  const volumeId = await s.createVolume();
  const r = await (await attach(volumeId, { sourceVmName: 'gamma', diskKey: 2003 })).result();
  assert.equal(r.access!.persistentName, 'gammadisk3');
  await expectFailure(
    (await attach(volumeId, { sourceVmName: 'GAMMA', diskKey: 2003 })).result(),
    /mapped as VM "gamma" disk key 2003 \(disk 3\) \(name gammadisk3\), but this request says VM "GAMMA" disk key 2003/,
  );
  assert.equal((await auditOf(s, volumeId, 'attach')).op.status, 'refused');
  const again = await (await attach(volumeId, { sourceVmName: 'gamma', diskKey: 2003 })).result();
  assert.equal(again.access!.persistentName, 'gammadisk3');
  const unnamed = await (await attach(volumeId)).result();
  assert.equal(unnamed.access!.persistentName, 'gammadisk3', 'no naming: the recorded name');
});

test("without naming: the engine's volume name gives the name; any other name is refused saying what to send", async () => {
  const engineVolume = await s.createVolume(1, 'migration-pgengine-pgengine-disk-2');
  const r = await (await attach(engineVolume)).result();
  assert.equal(r.access!.persistentName, 'pgenginedisk2');

  const plain = await s.createVolume(1, 'DATA-7');
  await expectFailure(
    (await attach(plain)).result(),
    /no persistent name yet .* send the VM name and disk key .* "DATA-7" is not of the form/,
  );
  assert.equal((await auditOf(s, plain, 'attach')).op.status, 'refused');
  assert.equal(await getMapping(s.db.pool, plain), undefined);
});

test('a lone surrogate or an invisible character never reaches a workflow: the field is named', async () => {
  const volumeId = await s.createVolume();
  for (const bad of ['pg\ud800test', 'pg\u200btest', 'pg\u202etest']) {
    await assert.rejects(attach(volumeId, { sourceVmName: bad, diskKey: 2000 }), (e: unknown) => {
      assert.ok(e instanceof InvalidRequestError);
      assert.equal(e.issues[0]!.field, 'sourceVmName');
      return true;
    });
  }
  assert.equal(await s.volumes.latest(volumeId), undefined, 'nothing started');
});
