// Benchmark: worker start-up from the release (compiled JavaScript, prebuilt workflow bundle,
// the release's own Node) against tsx from this checkout (transpiling at load, and for the
// control worker webpack-bundling the workflows), side by side on this machine: runs
// interleaved, median reported. Start-up = spawn until the worker logs "… worker ready"
// (Worker.create done: the bundle loaded, the connection up; polling starts right after).
//
//   TEMPORAL_ADDRESS=127.0.0.1:7644 node --import tsx bench/startup.ts <unpacked release dir> [runs=5]
//   (a release dir: tar -xzf dist/volume-lifecycle-*.tar.gz; needs MariaDB as scripts/test has it)
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freshDatabase } from '../test/support/db.js';
import { interleaved, printTimes } from './interleaved.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const [releaseDir, runsArg] = process.argv.slice(2);
if (!releaseDir) {
  console.error('usage: bench/startup.ts <unpacked release dir> [runs=5]');
  process.exit(2);
}
const runs = Number(runsArg ?? 5);
const app = path.resolve(releaseDir);

function startup(cmd: string, args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const p = spawn(cmd, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  p.stderr.on('data', (d: Buffer) => out.push(d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`no "${ready}" in 120 s\n${out.join('')}`));
    }, 120_000);
    p.once('exit', (code) => reject(new Error(`exited ${code} before ready\n${out.join('')}`)));
    createInterface({ input: p.stdout }).on('line', (line) => {
      out.push(line);
      if (!line.includes(`"msg":"${ready}"`)) return;
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      p.removeAllListeners('exit');
      p.once('exit', () => resolve(ms));
      p.kill('SIGTERM');
    });
  });
}

const db = await freshDatabase('startup');
const base: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
  DB_HOST: process.env.DB_HOST ?? '127.0.0.1',
  DB_PORT: process.env.DB_PORT ?? '3306',
  DB_USER: process.env.DB_USER ?? 'root',
  DB_PASSWORD: process.env.DB_PASSWORD ?? '',
  DB_NAME: db.name,
  TASK_QUEUE_PREFIX: `startup-${randomUUID().slice(0, 8)}`,
  APPLIANCE_VM_ID: randomUUID(),
  NBD_MANAGE_SERVER: 'false',
  CLOUDSTACK_API_KEY: 'unused',
  CLOUDSTACK_SECRET_KEY: 'unused',
};
const node = path.join(app, 'node/bin/node');
const kinds = {
  'host worker, release': () =>
    startup(node, [path.join(app, 'src/cli/service.js'), 'host-worker'], base, 'host worker ready'),
  'host worker, tsx': () =>
    startup(process.execPath, ['--import', 'tsx', 'src/worker/host-main.ts'], base, 'host worker ready'),
  // No APPLIANCE_VM_ID for the control worker: its reconcile Schedule is not start-up.
  'control worker, release': () =>
    startup(
      node,
      [path.join(app, 'src/cli/service.js'), 'control-worker'],
      { ...base, APPLIANCE_VM_ID: undefined },
      'control worker ready',
    ),
  'control worker, tsx': () =>
    startup(
      process.execPath,
      ['--import', 'tsx', 'src/worker/control-main.ts'],
      { ...base, APPLIANCE_VM_ID: undefined },
      'control worker ready',
    ),
};
const times = await interleaved(kinds, runs).finally(() => db.close());
printTimes(`worker start-up, spawn → ready (${runs} interleaved runs each, median; all runs in ms):`, times);
