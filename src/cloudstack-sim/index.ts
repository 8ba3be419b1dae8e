export { CloudStackSimulator, type SimulatorOptions } from './server.js';
export { InMemoryHypervisor, type HypervisorBackend, type HypervisorAttach } from './hypervisor.js';
export { FaultInjector, type Fault } from './faults.js';
export { SimState, csDate } from './state.js';
import { CloudStackSimulator, type SimulatorOptions } from './server.js';

/** Start a simulator with a zone, a disk offering, an appliance VM and a target VM. */
export async function startSimulator(
  opts: SimulatorOptions & { applianceVmId?: string; targetVmIds?: string[] } = {},
) {
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
  return { sim, zone, offering, appliance, targets };
}
