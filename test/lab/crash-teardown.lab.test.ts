import { after, before } from 'node:test';
import { crashAtEveryStep } from '../support/crash-cases.js';
import { startLabStack, type LabStack } from '../support/lab-stack.js';

/**
 * Durability on real parts, for the sagas that take a volume away from the appliance (detach,
 * failover, delete): kill -9 of the worker right after every step (test/support/crash-cases.ts).
 */
let s: LabStack;
before(
  async () =>
    (s = await startLabStack('crashout', { correlationTimeoutMs: 90_000, controlWorker: 'process' })),
);
after(() => s?.close());

crashAtEveryStep(() => s, ['detach', 'failover', 'delete']);
