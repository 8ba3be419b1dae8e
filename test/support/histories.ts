import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';

const { History } = proto.temporal.api.history.v1;

export const HISTORY_DIR = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));

/**
 * Workflow code is a protocol with live runs in flight: every saga path's history is kept as a
 * fixture and replayed against the current code (test/unit/replay.test.ts). Lab tests record
 * them when RECORD_HISTORIES=1.
 */
export async function recordHistory(
  client: Client,
  workflowId: string,
  runId: string,
  name: string,
): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  await mkdir(HISTORY_DIR, { recursive: true });
  // protobufjs's own JSON form, read back with History.fromObject (the SDK's JSON helpers trip
  // over a second protobufjs copy nested under @temporalio/common).
  await writeFile(path.join(HISTORY_DIR, `${name}.json`), JSON.stringify(history));
}

export async function loadHistories(): Promise<
  { workflowId: string; history: ReturnType<typeof History.fromObject> }[]
> {
  const files = (await readdir(HISTORY_DIR).catch(() => [])).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(
    files.map(async (f) => ({
      workflowId: f.replace(/\.json$/, ''),
      history: History.fromObject(JSON.parse(await readFile(path.join(HISTORY_DIR, f), 'utf8'))),
    })),
  );
}
