/**
 * Hypervisor backends for the CloudStack simulator in the appliance lab.
 *
 * - QmpHypervisor: the appliance VM is the lab guest; attach = hot-plug a virtio-blk disk with the
 *   volume's serial over QMP, detach = device_del, wait for DEVICE_DELETED, blockdev-del.
 * - FileTargetHypervisor: simulated target VMs; attach only records where the volume is. The
 *   image stays a plain file in the lab dir, so a test can change its data "as the target VM
 *   would" between a detach from the appliance and the next attach.
 * - RoutingHypervisor: one backend per VM id, with a default (e.g. QMP for the appliance, files for
 *   everything else).
 *
 * Volumes are sparse files `<dir>/<volumeId>.img`, created with the volume's size on first attach
 * and shared by all backends over the same dir.
 *
 * The shapes match `HypervisorBackend` of harness/cloudstack-sim/hypervisor.ts (structurally).
 */
import { existsSync } from 'node:fs';
import { mkdir, open, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import type { HotplugRequest } from './vm.js';

export interface HypervisorAttachRequest {
  volumeId: string;
  vmId: string;
  serial: string;
  deviceId: number;
  sizeBytes: number;
}

export interface HypervisorDetachRequest {
  volumeId: string;
  vmId: string;
}

export interface LabHypervisorBackend {
  attach(req: HypervisorAttachRequest): Promise<void>;
  detach(req: HypervisorDetachRequest): Promise<void>;
}

export interface Attachment {
  volumeId: string;
  vmId: string;
  serial: string;
  deviceId: number;
  file: string;
}

/** `<dir>/<volumeId>.img`; the id must be a plain name (UUID-like), never a path. */
export function volumeImagePath(dir: string, volumeId: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(volumeId)) throw new Error(`unsafe volume id ${volumeId}`);
  return path.join(dir, `${volumeId}.img`);
}

/** Create the sparse image with `sizeBytes` if missing; grow it if the volume grew. Never shrinks. */
export async function ensureVolumeImage(dir: string, volumeId: string, sizeBytes: number): Promise<string> {
  const file = volumeImagePath(dir, volumeId);
  await mkdir(dir, { recursive: true });
  if (!existsSync(file)) {
    await (await open(file, 'wx').catch(() => open(file, 'r+'))).close();
  }
  if ((await stat(file)).size < sizeBytes) await truncate(file, sizeBytes);
  return file;
}

/** QEMU device id for a volume: starts with a letter, short enough for node names (≤ 31). */
export function qemuDeviceIdFor(volumeId: string): string {
  return `v${volumeId.replace(/[^A-Za-z0-9]/g, '').slice(0, 24)}`;
}

export class QmpHypervisor implements LabHypervisorBackend {
  private readonly attached = new Map<string, Attachment>();

  constructor(
    private readonly lab: { hotplug(req: HotplugRequest): Promise<void>; unplug(id: string): Promise<void> },
    private readonly opts: {
      dir: string;
      /** If set, attach/detach for any other VM id is refused. */
      vmId?: string;
    },
  ) {}

  imagePath(volumeId: string): string {
    return volumeImagePath(this.opts.dir, volumeId);
  }

  attachments(): Attachment[] {
    return [...this.attached.values()];
  }

  private checkVm(vmId: string): void {
    if (this.opts.vmId && vmId !== this.opts.vmId) {
      throw new Error(`QmpHypervisor serves VM ${this.opts.vmId}, not ${vmId}`);
    }
  }

  async attach(req: HypervisorAttachRequest): Promise<void> {
    this.checkVm(req.vmId);
    if (this.attached.has(req.volumeId)) return; // idempotent
    const file = await ensureVolumeImage(this.opts.dir, req.volumeId, req.sizeBytes);
    await this.lab.hotplug({ id: qemuDeviceIdFor(req.volumeId), file, serial: req.serial });
    this.attached.set(req.volumeId, {
      volumeId: req.volumeId,
      vmId: req.vmId,
      serial: req.serial,
      deviceId: req.deviceId,
      file,
    });
  }

  async detach(req: HypervisorDetachRequest): Promise<void> {
    this.checkVm(req.vmId);
    // Unplug even if not recorded (idempotent on QEMU's side: a missing device is fine).
    await this.lab.unplug(qemuDeviceIdFor(req.volumeId));
    this.attached.delete(req.volumeId);
  }
}

export class FileTargetHypervisor implements LabHypervisorBackend {
  private readonly attached = new Map<string, Attachment>();

  constructor(private readonly opts: { dir: string }) {}

  imagePath(volumeId: string): string {
    return volumeImagePath(this.opts.dir, volumeId);
  }

  attachments(vmId?: string): Attachment[] {
    return [...this.attached.values()].filter((a) => !vmId || a.vmId === vmId);
  }

  attachmentOf(volumeId: string): Attachment | undefined {
    return this.attached.get(volumeId);
  }

  async attach(req: HypervisorAttachRequest): Promise<void> {
    const file = await ensureVolumeImage(this.opts.dir, req.volumeId, req.sizeBytes);
    this.attached.set(req.volumeId, {
      volumeId: req.volumeId,
      vmId: req.vmId,
      serial: req.serial,
      deviceId: req.deviceId,
      file,
    });
  }

  detach(req: HypervisorDetachRequest): Promise<void> {
    const a = this.attached.get(req.volumeId);
    if (a && a.vmId === req.vmId) this.attached.delete(req.volumeId);
    return Promise.resolve();
  }
}

/** Dispatches by VM id: `routes[vmId]` when present, otherwise `fallback`. */
export class RoutingHypervisor implements LabHypervisorBackend {
  constructor(
    private readonly routes: Record<string, LabHypervisorBackend>,
    private readonly fallback: LabHypervisorBackend,
  ) {}

  private pick(vmId: string): LabHypervisorBackend {
    return this.routes[vmId] ?? this.fallback;
  }

  attach(req: HypervisorAttachRequest): Promise<void> {
    return this.pick(req.vmId).attach(req);
  }

  detach(req: HypervisorDetachRequest): Promise<void> {
    return this.pick(req.vmId).detach(req);
  }
}
