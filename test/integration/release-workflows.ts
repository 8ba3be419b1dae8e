// Workflows the release test runs through an installed host worker: each calls one host
// activity on the appliance's queue, the way the sagas do (workflows/proxies.ts).
import { proxyActivities } from '@temporalio/workflow';

interface HostActivities {
  hostListDevices(): Promise<string[]>;
  hostCorrelate(a: { serial: string; timeoutMs: number }): Promise<{ devicePath: string; serial: string }>;
}

const host = (queue: string) =>
  proxyActivities<HostActivities>({
    taskQueue: queue,
    startToCloseTimeout: '2 minutes',
    heartbeatTimeout: '15 seconds',
    // One attempt: a step the draining worker did not finish would show as a failure here.
    retry: { maximumAttempts: 1 },
  });

export async function listDevicesOn(queue: string): Promise<string[]> {
  return host(queue).hostListDevices();
}

export async function correlateOn(
  queue: string,
  serial: string,
): Promise<{ devicePath: string; serial: string }> {
  return host(queue).hostCorrelate({ serial, timeoutMs: 60_000 });
}

/** Two steps, as a saga has: the first may be in flight on one worker, the next on its successor. */
export async function correlateThenListOn(
  queue: string,
  serial: string,
): Promise<{ devicePath: string; devices: string[] }> {
  const { devicePath } = await host(queue).hostCorrelate({ serial, timeoutMs: 60_000 });
  return { devicePath, devices: await host(queue).hostListDevices() };
}
