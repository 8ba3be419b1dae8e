/**
 * What happens on the hypervisor when the simulated CloudStack attaches or detaches a disk. The
 * default records it in memory; the appliance lab hot-plugs real virtio disks (src/lab).
 * A throw fails the job as CloudStack's host failure does (530 "Failed to attach volume …").
 */
export interface HypervisorAttach {
  volumeId: string;
  vmId: string;
  /** CloudStack/KVM's virtio serial for the volume (diskSerialFor). */
  serial: string;
  deviceId: number;
  sizeBytes: number;
}

export interface HypervisorBackend {
  attach(a: HypervisorAttach): Promise<void>;
  detach(a: { volumeId: string; vmId: string }): Promise<void>;
}

export class InMemoryHypervisor implements HypervisorBackend {
  readonly attached = new Map<string, HypervisorAttach>();
  async attach(a: HypervisorAttach): Promise<void> {
    this.attached.set(a.volumeId, a);
  }
  async detach(a: { volumeId: string }): Promise<void> {
    this.attached.delete(a.volumeId);
  }
}
