import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Pool, RowDataPacket } from 'mysql2/promise';
import { readExport } from '../../src/db/exports.js';
import { getMapping } from '../../src/db/mappings.js';
import { engineExportNameOf } from '../../src/domain/device-names.js';
import {
  differences,
  engineExportOf,
  engineMappingOf,
  isHeld,
} from '../../src/engine-contract/engine-view.js';
import { createEngineDatabase, type EngineDb } from '../../harness/engine-db/index.js';

export * from '../../harness/engine-db/index.js';

/** A fresh engine database for one test file (harness/engine-db), dropped by `close()`. */
export function freshEngineDatabase(tag: string, opts: { nbdPort?: number; oldTriggers?: boolean } = {}) {
  return createEngineDatabase(`vl_test_engine_${tag}_${randomBytes(3).toString('hex')}`.slice(0, 64), opts);
}

/**
 * The engine's rows of `volumeId` against ours: its device_mappings row holds exactly what our
 * row says (engineMappingOf), its one export row what our export says, and none exists for a
 * volume we do not hold. `label` names the moment in a failure.
 */
export async function assertEngineRowsFollow(ours: Pool, e: EngineDb, volumeId: string, label: string) {
  const m = await getMapping(ours, volumeId);
  const ex = await readExport(ours, volumeId);
  const [dm] = await e.pool.query<RowDataPacket[]>('SELECT * FROM device_mappings WHERE volume_uuid = ?', [
    volumeId,
  ]);
  const [ne] = await e.pool.query<RowDataPacket[]>('SELECT * FROM nbd_exports WHERE volume_id = ?', [
    volumeId,
  ]);
  if (!m || !isHeld(m, ex !== undefined)) {
    assert.deepEqual(
      { mappings: dm.length, exports: ne.length },
      { mappings: 0, exports: 0 },
      `${label}: the engine has rows of volume ${volumeId}, which we do not hold`,
    );
    return;
  }
  assert.equal(dm.length, 1, `${label}: engine device_mappings rows of ${volumeId}`);
  assert.deepEqual(differences(dm[0]!, engineMappingOf(m)), [], `${label}: engine device_mappings row`);
  if (!ex) {
    assert.equal(ne.length, 0, `${label}: engine export rows of an unexported volume`);
    return;
  }
  assert.deepEqual(
    ne.map((r) => String(r.export_name)),
    [engineExportNameOf(volumeId)],
    `${label}: engine export rows of ${volumeId}`,
  );
  assert.deepEqual(
    differences(ne[0]!, engineExportOf(ex, e.rows.nbdPort)),
    [],
    `${label}: engine nbd_exports row`,
  );
}
