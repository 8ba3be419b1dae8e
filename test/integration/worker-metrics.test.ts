import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { freshDatabase } from '../support/db.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let db: Awaited<ReturnType<typeof freshDatabase>>;
let child: ChildProcess | undefined;

before(async () => (db = await freshDatabase('wmetrics')));
after(async () => {
  await stop(child);
  await db?.close();
});

async function freePort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

async function stop(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = once(p, 'exit');
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

test('the control worker serves the Temporal core metrics at WORKER_METRICS_ADDRESS', async () => {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    DB_NAME: db.name,
    TASK_QUEUE_PREFIX: `wmetrics-${randomUUID().slice(0, 8)}`,
    WORKER_METRICS_ADDRESS: `127.0.0.1:${port}`,
    // Only checked for presence at start; nothing calls CloudStack here.
    CLOUDSTACK_API_KEY: process.env.CLOUDSTACK_API_KEY || 'test-key',
    CLOUDSTACK_SECRET_KEY: process.env.CLOUDSTACK_SECRET_KEY || 'test-secret',
  };
  delete env.APPLIANCE_VM_ID; // no reconcile Schedule for this throw-away worker
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/worker/control-main.ts'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = proc;
  const output: string[] = [];
  proc.stderr.setEncoding('utf8').on('data', (d: string) => output.push(d));

  // pino writes one JSON object a line on stdout.
  const logs: { msg?: string; metricsUrl?: string }[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no "control worker ready" within 120 s')), 120_000);
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`control worker exited (${code ?? sig}) before ready`));
    });
    createInterface({ input: proc.stdout }).on('line', (line) => {
      output.push(line);
      try {
        const l = JSON.parse(line) as (typeof logs)[number];
        logs.push(l);
        if (l.msg === 'control worker ready') {
          clearTimeout(timer);
          resolve();
        }
      } catch {
        // not a log line
      }
    });
  });
  await ready.catch((err: Error) => {
    throw new Error(`${err.message}\n${output.join('\n')}`);
  });

  const announced = logs.find((l) => l.msg === 'Temporal worker metrics served');
  assert.equal(
    announced?.metricsUrl,
    `http://127.0.0.1:${port}/metrics`,
    'the worker logs where metrics are',
  );

  // The pollers start with worker.run(), right after the ready line: poll until they show up.
  let body = '';
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200);
    body = await res.text();
    if (/^temporal_num_pollers\{/m.test(body)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const names = [...new Set([...body.matchAll(/^(temporal_[a-z_]+)/gm)].map((m) => m[1]))].sort();
  console.log(`temporal metrics served: ${names.join(' ')}`);
  assert.match(body, /^temporal_num_pollers\{/m, body);
  assert.match(
    body,
    new RegExp(`task_queue="${env.TASK_QUEUE_PREFIX}-control"`),
    'labelled with our task queue',
  );
  assert.match(body, /^temporal_worker_start\{/m);

  await stop(proc);
  assert.equal(proc.signalCode ?? proc.exitCode, 0, `clean shutdown on SIGTERM\n${output.join('\n')}`);
});
