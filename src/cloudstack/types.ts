/**
 * The narrow CloudStack interface the rest of the code depends on. The HTTP client in this
 * folder implements it against a real management server (or the simulator, which it cannot
 * tell apart). Shapes follow CloudStack's VolumeResponse / UserVmResponse; only fields we use
 * are typed.
 */
export interface CsVolume {
  id: string;
  name: string;
  type: 'ROOT' | 'DATADISK';
  state: string; // Allocated, Creating, Ready, Attaching, Destroy, … (no Detaching: stays Ready)
  size: number; // bytes
  zoneid: string;
  virtualmachineid?: string;
  deviceid?: number;
  vmname?: string;
  vmstate?: string;
  /** Only while a job is still running on the volume (attach, detach, create …): jobstatus 0. */
  jobid?: string;
  jobstatus?: number;
}

export interface CsVirtualMachine {
  id: string;
  name: string;
  displayname?: string;
  state: string; // Running, Stopped, …
  zoneid: string;
  hypervisor?: string;
}

/** Called with the async job id as soon as CloudStack hands it out (to keep in heartbeats). */
export type OnJobStarted = (jobId: string) => void;

export interface AsyncOptions {
  /** Resume waiting for a job started by an earlier attempt instead of issuing the call again. */
  resumeJobId?: string;
  onJobStarted?: OnJobStarted;
  /** Called on each poll of a pending job (activities heartbeat here). */
  onPoll?: (jobId: string) => void;
  signal?: AbortSignal;
}

export interface CloudStackApi {
  /** With `id`, an id CloudStack does not know fails with VirtualMachineNotFound (not []). */
  listVirtualMachines(filter?: { id?: string; name?: string }): Promise<CsVirtualMachine[]>;
  listVolumes(filter?: {
    id?: string;
    virtualmachineid?: string;
    name?: string;
    zoneid?: string;
    type?: 'ROOT' | 'DATADISK';
  }): Promise<CsVolume[]>;
  /** undefined when CloudStack says the volume does not exist. */
  getVolume(id: string): Promise<CsVolume | undefined>;
  createVolume(
    args: { name: string; sizeGb: number; diskOfferingId: string; zoneId: string },
    opts?: AsyncOptions,
  ): Promise<CsVolume>;
  /**
   * Idempotent: already attached to `vmId` → returns the volume; attached elsewhere → conflict
   * error. A job already running on the volume (e.g. an earlier attempt's) is waited for first.
   */
  attachVolume(
    volumeId: string,
    vmId: string,
    opts?: AsyncOptions & { deviceId?: number },
  ): Promise<CsVolume>;
  /** Idempotent: not attached → returns the volume. With `fromVmId`, attached elsewhere → conflict error. */
  detachVolume(volumeId: string, opts?: AsyncOptions & { fromVmId?: string }): Promise<CsVolume>;
  /** Idempotent: already gone → success. */
  deleteVolume(volumeId: string): Promise<void>;
}
