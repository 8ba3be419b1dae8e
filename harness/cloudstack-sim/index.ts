export { CloudStackSimulator, type SimulatorOptions, type BeforeCommand } from './server.js';
export { parseExpires } from './expires.js';
export {
  InMemoryHypervisor,
  type HypervisorBackend,
  type HypervisorAttach,
  type HypervisorDetach,
} from './hypervisor.js';
export { FaultInjector, faultSchema, type Fault, type FaultInput } from './faults.js';
export { SimState, csDate, type SimVm, type SimVolume, type SimZone, type SimJob } from './state.js';
import { CloudStackSimulator, type SimulatorOptions } from './server.js';

export interface StartSimulatorOptions extends SimulatorOptions {
  /** Fixed ids for the seeded VMs (the lab names task queues after the appliance id). */
  applianceVmId?: string;
  targetVmIds?: string[];
}

/**
 * Start a simulator seeded with a zone, a custom-size disk offering, an appliance VM and target
 * VM(s). `url`/`apiKey`/`secretKey` are what a client needs; `state`, `faults` are the
 * inspection and fault-injection handles; `sim` is the simulator itself.
 */
export async function startSimulator(opts: StartSimulatorOptions = {}) {
  const sim = await new CloudStackSimulator(opts).start();
  const zone = sim.state.addZone('zone1');
  const offering = sim.state.addDiskOffering('custom');
  const appliance = sim.state.addVm({
    name: 'migration-appliance',
    zoneid: zone.id,
    ...(opts.applianceVmId ? { id: opts.applianceVmId } : {}),
  });
  const targets = (opts.targetVmIds ?? [undefined]).map((id, i) =>
    sim.state.addVm({ name: `migrated-vm-${i + 1}`, zoneid: zone.id, ...(id ? { id } : {}) }),
  );
  return {
    sim,
    url: sim.url,
    apiKey: sim.apiKey,
    secretKey: sim.secretKey,
    state: sim.state,
    faults: sim.faults,
    close: () => sim.close(),
    zone,
    offering,
    appliance,
    targets,
  };
}
export type RunningSimulator = Awaited<ReturnType<typeof startSimulator>>;
