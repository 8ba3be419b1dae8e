import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from '@temporalio/worker';
import { workflowBundle } from '../../src/worker/bundle.js';
import { loadHistories } from '../support/histories.js';

/**
 * Replays every recorded saga history (attach, detach, failover, failback, delete, their
 * compensation paths, repair and reconcile) against the current workflow code. A change that
 * would break runs in flight fails here: it must go through patched()/deprecatePatch().
 */
test('recorded histories of every saga path replay against the current workflow code', async () => {
  const histories = await loadHistories();
  assert.ok(
    histories.length >= 5,
    `expected recorded histories in test/fixtures/histories, found ${histories.length}`,
  );
  const results = Worker.runReplayHistories({ workflowBundle: await workflowBundle() }, histories);
  const seen: string[] = [];
  for await (const r of results) {
    seen.push(r.workflowId);
    assert.equal(r.error, undefined, `${r.workflowId}: ${r.error?.message}`);
  }
  assert.deepEqual(seen.sort(), histories.map((h) => h.workflowId).sort(), 'every history was replayed');
});
