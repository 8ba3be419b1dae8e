import { after, before } from 'node:test';
import { crashAtEveryStep } from '../support/crash-cases.js';
import { startStandinStack, type StandinStack } from '../support/standin-stack.js';
import { assertEngineRowsFollow } from '../support/engine-db.js';

/**
 * Durability of the control worker (every workflow, CloudStack and database step): run as a
 * process of its own, it is killed with SIGKILL right after each CloudStack and database step of
 * every saga acted (test/support/crash-cases.ts); a new one starts and the saga completes. The
 * appliance's kernel is stood in (these steps never touch it; the host worker's steps are killed
 * in the lab: test/lab/crash.lab.test.ts); Temporal, MariaDB, the simulator and workers are real.
 */
let s: StandinStack;
before(
  async () =>
    (s = await startStandinStack('crashctl', {
      controlWorker: 'process',
      maxDataVolumes: 1_000,
      // The engine's database beside ours: after every crash its rows must still follow ours.
      engineDb: {},
    })),
);
after(() => s?.close());

crashAtEveryStep(
  () => ({
    ...s,
    consistent: (label: string, volumeId: string) =>
      assertEngineRowsFollow(s.db.pool, s.engineDb!, volumeId, label),
  }),
  ['attach', 'detach', 'failover', 'failback', 'delete'],
  'control',
);
