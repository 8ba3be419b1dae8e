import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { VolumeLifecycleClient, type OperationHandle } from '../../src/client/index.js';
import { connectClient } from '../../src/temporal/connection.js';

// The Temporal Web UI finds our operations by their search attributes: what the operator README
// tells people to type (`VolumeId = "<uuid>"`) really lists the volume's workflow, and only it.
// The workflows are started on a task queue no worker polls, so they stay Running with the search
// attributes the client sets at start (VolumeId, ApplianceVmId, OperationType, SagaStep, VmName).

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TEMPORAL_ADDRESS = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
/** The dev server's UI listens on the gRPC port + 1000 (scripts/lib/common.sh, start-dev's default). */
const UI_URL = (
  process.env.TEMPORAL_UI_URL ??
  `http://127.0.0.1:${Number(TEMPORAL_ADDRESS.slice(TEMPORAL_ADDRESS.lastIndexOf(':') + 1)) + 1000}`
).replace(/\/$/, '');
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? join(ROOT, '.data', 'artifacts');

let t: Awaited<ReturnType<typeof connectClient>>;
let browser: Browser | undefined;
const started: OperationHandle[] = [];

before(async () => {
  t = await connectClient({ TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE: 'default' });
});
after(async () => {
  await browser?.close();
  for (const op of started) {
    await t.client.workflow
      .getHandle(op.workflowId, op.runId)
      .terminate('temporal-ui test done')
      .catch(() => {});
  }
  await t?.connection.close();
});

/** Wait until visibility lists the workflow for a query, so the UI has something to show. */
async function visible(query: string, workflowId: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    for await (const w of t.client.workflow.list({ query })) if (w.workflowId === workflowId) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`visibility did not list ${workflowId} for ${query} within 30 s`);
}

test('the Temporal UI lists a volume operation by its VolumeId search attribute', async (ctx) => {
  if (!existsSync(CHROMIUM)) {
    ctx.skip(`no Chromium at ${CHROMIUM} (apt-get install chromium; scripts/lib/common.sh installs it)`);
    return;
  }
  const volumes = new VolumeLifecycleClient({
    client: t.client,
    taskQueuePrefix: `ui-${randomUUID().slice(0, 8)}`, // polled by no worker: the workflows stay Running
  });
  const applianceVmId = randomUUID();
  const [ours, other] = [randomUUID(), randomUUID()];
  for (const [volumeId, sourceVmName] of [
    [ours, 'uitestvm'],
    [other, 'uitestother'],
  ] as const) {
    started.push(await volumes.attach({ volumeId, applianceVmId, sourceVmName, diskKey: 2000 }));
  }
  const byVolume = (v: string) => `VolumeId="${v}"`;
  await visible(byVolume(ours), `volume:${ours}`);
  await visible(byVolume(other), `volume:${other}`);

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  const list = (query: string) =>
    page.goto(`${UI_URL}/namespaces/default/workflows?query=${encodeURIComponent(query)}`);

  await list(byVolume(ours));
  await page.getByText(`volume:${ours}`).first().waitFor({ timeout: 60_000 });
  assert.equal(await page.getByText(`volume:${other}`).count(), 0, 'only the queried volume is listed');
  await mkdir(ARTIFACTS, { recursive: true });
  const shot = join(ARTIFACTS, 'temporal-ui-volume-query.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`Temporal UI screenshot: ${shot}`);

  // Another volume's query lists that volume's workflow, and not ours.
  await list(byVolume(other));
  await page.getByText(`volume:${other}`).first().waitFor({ timeout: 60_000 });
  assert.equal(await page.getByText(`volume:${ours}`).count(), 0, 'a different VolumeId does not list ours');

  // An operator who knows only the VM finds its operations (VmName is set at start), and the
  // workflow's page leads with its summary: the persistent name and the VM and disk it came from,
  // not only `volume:<uuid>`. (The list's own columns are the UI's: it shows no summary there.)
  await list(`VmName="uitestvm"`);
  await page.getByText(`volume:${ours}`).first().waitFor({ timeout: 60_000 });
  assert.equal(await page.getByText(`volume:${other}`).count(), 0, 'only the queried VM is listed');
  const op = started[0]!;
  await page.goto(
    `${UI_URL}/namespaces/default/workflows/${encodeURIComponent(op.workflowId)}/${op.runId}/history`,
  );
  await page.getByText('attach uitestvmdisk0 (VM "uitestvm" disk-2000)').first().waitFor({ timeout: 60_000 });
  await page.screenshot({ path: join(ARTIFACTS, 'temporal-ui-operation-summary.png'), fullPage: true });

  // The operator's combined query (docs/operator.md) works as well.
  await list(`OperationType="attach" AND SagaStep="queued" AND ApplianceVmId="${applianceVmId}"`);
  await page.getByText(`volume:${ours}`).first().waitFor({ timeout: 60_000 });
  await page.getByText(`volume:${other}`).first().waitFor({ timeout: 60_000 });
});
