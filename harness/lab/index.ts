/** The appliance lab: a QEMU/TCG guest with real dm, loop, NBD and udev. */
export { startLab } from './vm.js';
export type { Lab, LabOptions, HotplugRequest, GuestProcess, HostForward, GuestForward } from './vm.js';
export { QgaClient, QgaRunner, QgaError, guestEnv } from './qga.js';
export type { GuestExecStatus, GuestExecRequest, QgaRunnerOptions } from './qga.js';
export { QmpClient, QmpError } from './qmp.js';
export type { QmpEvent } from './qmp.js';
export { buildInitramfs, findKernel, defaultCacheDir } from './initramfs.js';
export type { KernelChoice, BuiltInitramfs } from './initramfs.js';
export {
  QmpHypervisor,
  FileTargetHypervisor,
  RoutingHypervisor,
  volumeImagePath,
  ensureVolumeImage,
  qemuDeviceIdFor,
} from './qmp-hypervisor.js';
export type {
  LabHypervisorBackend,
  HypervisorAttachRequest,
  HypervisorDetachRequest,
  Attachment,
} from './qmp-hypervisor.js';
