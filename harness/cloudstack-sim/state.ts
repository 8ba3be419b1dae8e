import { randomUUID } from 'node:crypto';
import { diskSerialFor } from '../../src/cloudstack/serial.js';

/** CloudStack's objects as the simulator keeps them (VolumeVO / UserVmVO, trimmed). */
export interface SimZone {
  id: string;
  name: string;
}
export interface SimVm {
  id: string;
  name: string;
  displayname: string;
  state: 'Running' | 'Stopped' | 'Destroyed';
  zoneid: string;
  internalId: number;
}
export interface SimVolume {
  id: string;
  internalId: number;
  name: string;
  type: 'ROOT' | 'DATADISK';
  state: string;
  size: number;
  zoneid: string;
  diskofferingid: string;
  vmId?: string;
  deviceId?: number;
  created: string;
  attached?: string;
  removed?: boolean;
}
export interface SimJob {
  id: string;
  cmd: string;
  status: 0 | 1 | 2;
  resultCode: number;
  result?: unknown;
  instanceId?: string;
  created: string;
  completed?: string;
}

/** CloudStack's date format: yyyy-MM-dd'T'HH:mm:ssZ, e.g. 2024-05-01T10:00:00+0000. */
export function csDate(d = new Date()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, '+0000');
}

export class SimState {
  readonly zones = new Map<string, SimZone>();
  readonly vms = new Map<string, SimVm>();
  readonly volumes = new Map<string, SimVolume>();
  readonly jobs = new Map<string, SimJob>();
  readonly diskOfferings = new Map<string, { id: string; name: string; customized: boolean }>();
  private nextId = 1;
  /** Per-VM data-disk limit (hypervisor_capabilities.max_data_volumes_limit; KVM default 32). */
  maxDataVolumes = 32;
  /** Size range of a custom-size volume in GB (custom.diskoffering.size.min / .max). */
  customDiskMinGb = 1;
  customDiskMaxGb = 1024;

  addZone(name = 'zone1', id: string = randomUUID()): SimZone {
    const z = { id, name };
    this.zones.set(id, z);
    return z;
  }
  addDiskOffering(name = 'custom', id: string = randomUUID()) {
    const o = { id, name, customized: true };
    this.diskOfferings.set(id, o);
    return o;
  }
  addVm(a: {
    name: string;
    zoneid: string;
    id?: string;
    state?: SimVm['state'];
    rootSizeBytes?: number;
  }): SimVm {
    const vm: SimVm = {
      id: a.id ?? randomUUID(),
      name: a.name,
      displayname: a.name,
      state: a.state ?? 'Running',
      zoneid: a.zoneid,
      internalId: this.nextId++,
    };
    this.vms.set(vm.id, vm);
    // Every VM has its ROOT volume on device 0.
    this.addVolume({
      name: `ROOT-${vm.internalId}`,
      type: 'ROOT',
      size: a.rootSizeBytes ?? 8 * 2 ** 30,
      zoneid: a.zoneid,
      vmId: vm.id,
      deviceId: 0,
      state: 'Ready',
    });
    return vm;
  }
  addVolume(a: {
    name: string;
    size: number;
    zoneid: string;
    id?: string;
    type?: 'ROOT' | 'DATADISK';
    state?: string;
    vmId?: string;
    deviceId?: number;
    diskofferingid?: string;
  }): SimVolume {
    const v: SimVolume = {
      id: a.id ?? randomUUID(),
      internalId: this.nextId++,
      name: a.name,
      type: a.type ?? 'DATADISK',
      state: a.state ?? 'Allocated',
      size: a.size,
      zoneid: a.zoneid,
      diskofferingid: a.diskofferingid ?? [...this.diskOfferings.keys()][0] ?? randomUUID(),
      created: csDate(),
      ...(a.vmId ? { vmId: a.vmId, deviceId: a.deviceId, attached: csDate() } : {}),
    };
    this.volumes.set(v.id, v);
    return v;
  }

  liveVolumes(): SimVolume[] {
    return [...this.volumes.values()].filter((v) => !v.removed);
  }

  /** Lowest free data-disk device id: 1, 2, 4, 5, … (0 is ROOT, 3 the CD-ROM). */
  freeDeviceId(vmId: string): number | undefined {
    const used = new Set(
      this.liveVolumes()
        .filter((v) => v.vmId === vmId)
        .map((v) => v.deviceId),
    );
    for (let id = 1; id <= this.maxDataVolumes + 1; id++) if (id !== 3 && !used.has(id)) return id;
    return undefined;
  }

  dataDiskCount(vmId: string): number {
    return this.liveVolumes().filter((v) => v.vmId === vmId && v.type === 'DATADISK').length;
  }

  serialOf(volumeId: string): string {
    return diskSerialFor(volumeId);
  }

  /**
   * The job still running on a volume, if any. CloudStack's volume view joins only pending jobs
   * (job_status 0) whose instance is the volume; with several, the first queued is shown.
   */
  pendingJobOn(volumeId: string): SimJob | undefined {
    for (const j of this.jobs.values()) if (j.status === 0 && j.instanceId === volumeId) return j;
    return undefined;
  }

  /** VolumeResponse JSON, with CloudStack's field names and JSON types; VM fields only when attached. */
  volumeJson(v: SimVolume): Record<string, unknown> {
    const zone = this.zones.get(v.zoneid);
    const offering = this.diskOfferings.get(v.diskofferingid);
    const out: Record<string, unknown> = {
      id: v.id,
      name: v.name,
      zoneid: v.zoneid,
      zonename: zone?.name ?? 'zone',
      type: v.type,
      size: v.size,
      created: v.created,
      state: v.state,
      account: 'admin',
      domainid: '00000000-0000-0000-0000-000000000001',
      domain: 'ROOT',
      domainpath: 'ROOT',
      storagetype: 'shared',
      provisioningtype: 'thin',
      diskofferingid: v.diskofferingid,
      diskofferingname: offering?.name ?? 'custom',
      destroyed: false,
      isextractable: false,
      quiescevm: false,
      supportsstoragesnapshot: false,
      tags: [],
    };
    if (v.state !== 'Allocated') {
      out.hypervisor = 'KVM';
      out.path = v.id;
      out.virtualsize = v.size;
    }
    if (v.vmId) {
      const vm = this.vms.get(v.vmId);
      out.virtualmachineid = v.vmId;
      out.deviceid = v.deviceId;
      out.vmname = vm?.name;
      out.vmdisplayname = vm?.displayname;
      out.vmstate = vm?.state;
      out.vmtype = 'User';
      out.attached = v.attached;
    }
    // A pending attach/detach/create shows as jobid + jobstatus 0; the state need not change (a
    // detach leaves it Ready: CloudStack has no Detaching state).
    const job = this.pendingJobOn(v.id);
    if (job) {
      out.jobid = job.id;
      out.jobstatus = job.status;
    }
    return out;
  }

  vmJson(vm: SimVm): Record<string, unknown> {
    return {
      id: vm.id,
      name: vm.name,
      displayname: vm.displayname,
      state: vm.state,
      hypervisor: 'KVM',
      zoneid: vm.zoneid,
      zonename: this.zones.get(vm.zoneid)?.name ?? 'zone',
      instancename: `i-2-${vm.internalId}-VM`,
      rootdeviceid: 0,
      account: 'admin',
      domainid: '00000000-0000-0000-0000-000000000001',
      domain: 'ROOT',
      created: csDate(),
      nic: [],
    };
  }
}
