// Benchmark: the host worker's start-up inside the lab guest (the appliance: QEMU TCG, 2 vCPUs),
// from the installed release (its unit's command line and env file: the one-file host worker),
// the same release's module tree, and tsx from this checkout, side by side in one boot: runs
// interleaved, median reported. Start-up = spawn until the worker logs "host worker ready" (it
// registers no workflows; the connection to Temporal up).
//
//   TEMPORAL_ADDRESS=127.0.0.1:7844 node --import tsx bench/startup-guest.ts [runs=3]
//   (builds the release unless RELEASE_ARTIFACT / RELEASE_BUILD_DIR names one)
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLab, type GuestProcess } from '../harness/lab/index.js';
import { installedService } from '../harness/lab/release.js';
import { interleaved, median, printTimes } from './interleaved.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const runs = Number(process.argv[2] ?? 3);
const temporalPort = Number((process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233').split(':').pop());

const lab = await startLab({ temporal: { hostPort: temporalPort } });
const settings = {
  TEMPORAL_ADDRESS: lab.guestTemporalAddress!,
  APPLIANCE_VM_ID: randomUUID(),
  TASK_QUEUE_PREFIX: `startup-${randomUUID().slice(0, 8)}`,
  NBD_EXPORTS_DIR: '/run/volume-lifecycle/exports',
  NBD_MANAGE_SERVER: 'false',
};
const installed = await installedService('appliance', 'volume-lifecycle-host-worker.service', settings);

async function startup(argv: string[], env: Record<string, string>, cwd?: string): Promise<number> {
  const t0 = Date.now();
  const p: GuestProcess = await lab.spawnInGuest(argv, { env, ...(cwd ? { cwd } : {}) });
  await p.waitForLog(/host worker ready/, 240_000);
  const ms = Date.now() - t0;
  await p.kill('TERM');
  for (let i = 0; i < 300 && !(await p.status()).exited; i++) await new Promise((r) => setTimeout(r, 100));
  return ms;
}

// The unit's command line runs the release's one-file host worker; the same release's module
// tree (what the bundle is built from) is the comparison.
const tree = [installed.argv[0]!, path.join(path.dirname(installed.argv[1]!), '../worker/host-main.js')];
const kinds: Record<string, () => Promise<number>> = {
  'release, one file (installed unit)': () => startup(installed.argv, installed.env),
  'release, module tree': () => startup(tree, installed.env),
  'checkout through tsx': () =>
    startup(['node', '--import', 'tsx', 'src/worker/host-main.ts'], { ...settings, LOG_LEVEL: 'info' }, REPO),
};
const times = await interleaved(kinds, runs).finally(async () => {
  await installed.cleanup();
  await lab.close();
});
printTimes(
  `host worker start-up in the lab guest (TCG), spawn → ready (${runs} interleaved runs, median):`,
  times,
);
const [one, rel, tsx] = Object.values(times).map(median) as [number, number, number];
console.log(
  `guest start-up: release one file ${one} ms, module tree ${rel} ms (${(rel / one).toFixed(2)}x), tsx ${tsx} ms (${(tsx / one).toFixed(2)}x)`,
);
