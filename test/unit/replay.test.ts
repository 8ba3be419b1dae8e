import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from '@temporalio/worker';
import { workflowBundle } from '../../src/worker/bundle.js';
import { loadHistories } from '../support/histories.js';

/**
 * Replays every recorded saga history against the current workflow code: the lab's fixtures of
 * 11-24 (every saga's paths, repair, reconcile) and each landed release's set recorded by the
 * workflow tier (`release-<commit>.jsonl.gz`: every saga × every step failing or cancelled;
 * `RECORD_HISTORIES=test/fixtures/histories/release-<commit>.jsonl.gz ./scripts/test test/workflow/*.test.ts`). A change that
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
  // Each release's set covers every saga ending every way (workflow tier, recorded).
  const sets = new Set(
    histories.map((h) => h.workflowId.split('/')[0]!).filter((s) => s.startsWith('release-')),
  );
  assert.ok(sets.size >= 1, 'at least one release set');
  for (const set of sets)
    for (const saga of ['attach', 'create', 'delete', 'detach', 'failback', 'failover'])
      for (const end of ['completed', 'failed', 'cancelled'])
        assert.ok(
          histories.some((h) => h.workflowId.startsWith(`${set}/${saga}Volume-${end}-`)),
          `${set}: a recorded ${saga} that ${end}`,
        );
});
