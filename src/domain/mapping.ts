import type { PersistentName } from './naming.js';

/** Where a volume is now, as the database records it (desired state for the device layer). */
export type VolumeLocation = 'appliance' | 'target' | 'detached';

/** What the dm device should be: linear over the current device, an error target, or gone. */
export type DmState = 'linear' | 'error' | 'absent';

/** One row of `device_mappings`, as the application sees it. */
export interface DeviceMapping {
  volumeId: string;
  sourceVmName: string;
  diskIndex: number;
  applianceVmId: string;
  location: VolumeLocation;
  targetVmId: string | null;
  devicePath: string | null;
  virtioSerial: string;
  sizeBytes: number;
  persistentName: PersistentName;
  mapperPath: string;
  dmState: DmState;
  version: number;
  createdAt: Date;
  updatedAt: Date;
}
