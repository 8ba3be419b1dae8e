/**
 * The virtio serial CloudStack's KVM agent gives a volume's disk: the volume UUID without
 * dashes, first 20 characters (LibvirtComputingResource.diskUuidToSerial; virtio-blk's ID is 20
 * bytes). The guest sees it as /sys/block/vdX/serial and /dev/disk/by-id/virtio-<serial>.
 * Pure: also used by workflow code.
 */
export function diskSerialFor(volumeId: string): string {
  return volumeId.replace(/-/g, '').slice(0, 20);
}
