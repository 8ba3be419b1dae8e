// `npx tsx harness/cloudstack-sim/main.ts [--port 8080] [--job-ms 50] [--data-disk-limit 32]
// [--custom-disk-max-gb 1024] [--test-endpoints]`: a
// CloudStack API simulator on 127.0.0.1, seeded with a zone, an appliance VM and a target VM,
// printing its endpoint and key pair as one JSON line so any CloudStack client can use it.
import { parseArgs } from 'node:util';
import { startSimulator } from './index.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8080' },
    'job-ms': { type: 'string', default: '50' },
    'api-key': { type: 'string' },
    'secret-key': { type: 'string' },
    'data-disk-limit': { type: 'string', default: '32' },
    'custom-disk-max-gb': { type: 'string', default: '1024' },
    'test-endpoints': { type: 'boolean', default: false },
  },
});
const int = (name: string, v: string, min: number, max: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: must be ${min}..${max}`);
  return n;
};
const env = await startSimulator({
  host: values.host,
  port: int('port', values.port, 0, 65535),
  jobDurationMs: int('job-ms', values['job-ms'], 0, 3_600_000),
  ...(values['api-key'] ? { apiKey: values['api-key'] } : {}),
  ...(values['secret-key'] ? { secretKey: values['secret-key'] } : {}),
  testEndpoints: values['test-endpoints'],
});
env.state.maxDataVolumes = int('data-disk-limit', values['data-disk-limit'], 1, 1000);
env.state.customDiskMaxGb = int('custom-disk-max-gb', values['custom-disk-max-gb'], 1, 1_000_000);
console.log(
  JSON.stringify({
    endpoint: env.url,
    apiKey: env.apiKey,
    secretKey: env.secretKey,
    zoneId: env.zone.id,
    diskOfferingId: env.offering.id,
    applianceVmId: env.appliance.id,
    targetVmId: env.targets[0]!.id,
  }),
);
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => void env.close().then(() => process.exit(0)));
