/**
 * What happens on the hypervisor when the simulated CloudStack attaches or detaches a disk. The
 * default records it in memory; the appliance lab hot-plugs real virtio disks (harness/lab).
 * A throw fails the job as CloudStack's host failure does (530 "Failed to attach volume …").
 * Backends are chosen per VM (CloudStackSimulator.backendFor / setHypervisor / hypervisorFor),
 * so the appliance VM and the migrated target VMs can each have their own.
 */
export interface HypervisorAttach {
  volumeId: string;
  vmId: string;
  /** CloudStack/KVM's virtio serial for the volume (diskSerialFor). */
  serial: string;
  deviceId: number;
  sizeBytes: number;
}

export interface HypervisorDetach {
  volumeId: string;
  vmId: string;
}

export interface HypervisorBackend {
  attach(a: HypervisorAttach): Promise<void>;
  detach(a: HypervisorDetach): Promise<void>;
}

/** Records what is plugged where; `log` keeps every call in order for assertions. */
export class InMemoryHypervisor implements HypervisorBackend {
  readonly attached = new Map<string, HypervisorAttach>();
  readonly log: (({ op: 'attach' } & HypervisorAttach) | ({ op: 'detach' } & HypervisorDetach))[] = [];
  async attach(a: HypervisorAttach): Promise<void> {
    this.log.push({ op: 'attach', ...a });
    this.attached.set(a.volumeId, a);
  }
  async detach(a: HypervisorDetach): Promise<void> {
    this.log.push({ op: 'detach', ...a });
    this.attached.delete(a.volumeId);
  }
}
