import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
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

/** A release's recorded histories: gzip'd JSON lines of { workflowId, history } (workflow tier). */
export async function readHistoryLines(file: string): Promise<{ workflowId: string; history: object }[]> {
  const text = gunzipSync(await readFile(file)).toString('utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { workflowId: string; history: object });
}

/**
 * Every recorded history: the lab's one-per-file fixtures (`<name>.json`) and each earlier
 * release's set (`release-<commit>.jsonl.gz`), ids prefixed by the set they come from.
 */
export async function loadHistories(): Promise<
  { workflowId: string; history: ReturnType<typeof History.fromObject> }[]
> {
  const files = (await readdir(HISTORY_DIR).catch(() => [])).sort();
  const out: { workflowId: string; history: ReturnType<typeof History.fromObject> }[] = [];
  for (const f of files) {
    if (f.endsWith('.json')) {
      out.push({
        workflowId: f.replace(/\.json$/, ''),
        history: History.fromObject(JSON.parse(await readFile(path.join(HISTORY_DIR, f), 'utf8'))),
      });
    } else if (f.endsWith('.jsonl.gz')) {
      const set = f.replace(/\.jsonl\.gz$/, '');
      for (const h of await readHistoryLines(path.join(HISTORY_DIR, f)))
        out.push({ workflowId: `${set}/${h.workflowId}`, history: History.fromObject(h.history) });
    }
  }
  return out;
}
