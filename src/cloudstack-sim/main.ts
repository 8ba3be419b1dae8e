// `npx tsx src/cloudstack-sim/main.ts [--port 8080]`: a CloudStack API simulator on 127.0.0.1,
// printing its endpoint and key pair as one JSON line so any CloudStack client can use it.
import { parseArgs } from 'node:util';
import { startSimulator } from './index.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    'job-ms': { type: 'string', default: '200' },
    'test-endpoints': { type: 'boolean', default: false },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port: must be 0..65535');
const { sim, zone, offering, appliance, targets } = await startSimulator({
  port,
  jobDurationMs: Number(values['job-ms']),
  testEndpoints: values['test-endpoints'],
});
console.log(
  JSON.stringify({
    endpoint: sim.url,
    apiKey: sim.apiKey,
    secretKey: sim.secretKey,
    zoneId: zone.id,
    diskOfferingId: offering.id,
    applianceVmId: appliance.id,
    targetVmId: targets[0]!.id,
  }),
);
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => void sim.close().then(() => process.exit(0)));
