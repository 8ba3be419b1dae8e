import { Context } from '@temporalio/activity';
import type { DeviceCorrelator, DeviceMapperApi, DmTable, ResolvedDevice } from '../../src/device/types.js';
import type { ExportBackend, ProbeResult } from '../../src/nbd/types.js';
import { packInventory, type PackedInventory } from '../../src/reconcile/inventory-codec.js';
import { persistentNameSchema, exportNameSchema } from '../../src/domain/naming.js';
import { withClassification } from '../failures.js';
import { HostLock } from './lock.js';

export interface HostDeps {
  correlator: DeviceCorrelator;
  dm: DeviceMapperApi;
  exports: ExportBackend;
}

/** Activities that must run on the appliance itself. They never touch the database. */
export function createHostActivities({ correlator, dm, exports }: HostDeps) {
  const lock = new HostLock();
  const name = (n: string) => persistentNameSchema.parse(n);

  return withClassification({
    async hostListDevices(): Promise<string[]> {
      return correlator.listDevices();
    },
    /** Wait for the device carrying `serial`; heartbeats while waiting (heartbeatTimeout applies). */
    async hostCorrelate(a: {
      serial: string;
      expectedSizeBytes?: number;
      devicesBefore?: string[];
      timeoutMs: number;
    }): Promise<ResolvedDevice> {
      const ctx = Context.current();
      ctx.heartbeat({ waitingFor: a.serial });
      return correlator.waitForDevice({
        ...a,
        onWaiting: (elapsedMs, seen) => ctx.heartbeat({ waitingFor: a.serial, elapsedMs, seen }),
        signal: ctx.cancellationSignal,
      });
    },
    async hostFindBySerial(serial: string): Promise<ResolvedDevice | null> {
      return (await correlator.findBySerial(serial)) ?? null;
    },
    async hostWaitGone(a: { serial: string; timeoutMs: number }): Promise<void> {
      const ctx = Context.current();
      ctx.heartbeat();
      await correlator.waitForGone(a.serial, a.timeoutMs, ctx.cancellationSignal);
    },
    async hostDmTable(n: string): Promise<DmTable | null> {
      return (await dm.info(name(n)))?.table ?? null;
    },
    async hostDmInfo(n: string) {
      return (await dm.info(name(n))) ?? null;
    },
    async hostDmEnsureLinear(a: { name: string; devicePath: string }) {
      return lock.run(() => dm.ensureLinear(name(a.name), a.devicePath));
    },
    async hostDmEnsureError(a: { name: string; sectors: number }) {
      return lock.run(() => dm.ensureError(name(a.name), a.sectors));
    },
    async hostDmEnsureTable(a: { name: string; table: DmTable }) {
      return lock.run(() => dm.ensureTable(name(a.name), a.table));
    },
    async hostDmRemove(a: { name: string }) {
      return lock.run(() => dm.remove(name(a.name)));
    },
    /**
     * Conflicts before mapping `devicePath` as `name`: other dm devices whose table points at the
     * same device (left by a volume that used this /dev/vdX before). They are stale by
     * definition — the kernel now gives that device to our volume — so they are pointed at an
     * error target (never removed while open; reconciliation removes them once idle).
     */
    async hostResolveConflicts(a: { name: string; devicePath: string }): Promise<string[]> {
      return lock.run(async () => {
        const resolved: string[] = [];
        const mine = await dm.deviceNumber(a.devicePath);
        for (const other of await dm.list()) {
          if (other === a.name) continue;
          const info = await dm.info(other);
          // Only devices we created (dm UUID VOLLIFE-…) are ever changed here.
          if (!info || !info.uuid.startsWith('VOLLIFE-') || info.table.kind !== 'linear') continue;
          if (info.table.device === a.devicePath || info.table.device === mine) {
            await dm.ensureError(other, info.table.sectors);
            resolved.push(other);
          }
        }
        return resolved;
      });
    },
    async hostExportEnsure(a: { exportName: string; targetPath: string }) {
      exportNameSchema.parse(a.exportName);
      const r = await lock.run(() => exports.ensure(a));
      return { ...r, backend: exports.kind, uri: exports.uriFor(a.exportName) };
    },
    /**
     * Remove an export. With `onlyIfTarget` (compensations), only an export of ours serving that
     * path is removed: whatever else sits under the name was not made by this run.
     */
    async hostExportRemove(a: { exportName: string; onlyIfTarget?: string }) {
      exportNameSchema.parse(a.exportName);
      return lock.run(async () => {
        if (a.onlyIfTarget !== undefined) {
          const mine = (await exports.listConfigured()).some(
            (e) => e.exportName === a.exportName && e.targetPath === a.onlyIfTarget,
          );
          if (!mine) return { removed: false };
        }
        return exports.remove(a.exportName);
      });
    },
    async hostExportConfigured(exportName: string): Promise<boolean> {
      return (await exports.listConfigured()).some((e) => e.exportName === exportName);
    },
    async hostExportProbe(exportName: string): Promise<ProbeResult> {
      return exports.probe(exportName);
    },
    async hostExportUri(exportName: string): Promise<string> {
      return exports.uriFor(exportName);
    },
    async hostExportsServed() {
      return exports.listServed();
    },

    // --- reconciliation --------------------------------------------------------------------
    /** Actual state of this appliance, compact (it travels through workflow history). */
    async hostInventory(): Promise<PackedInventory> {
      const dmNames = await dm.list();
      const dmEntries = [];
      for (const n of dmNames) {
        const info = await dm.info(n);
        if (info) dmEntries.push({ name: n, table: info.table, openCount: info.openCount, uuid: info.uuid });
      }
      const devices = [];
      for (const d of await correlator.describeDevices()) {
        devices.push({
          kernelName: d.kernelName,
          devicePath: d.devicePath,
          serial: d.serial,
          devNumber: await dm.deviceNumber(d.devicePath),
        });
      }
      const exportsConfigured = (await exports.listConfigured()).map((e) => ({
        exportName: e.exportName,
        targetPath: e.targetPath,
      }));
      let exportsServed: string[] | null;
      try {
        exportsServed = (await exports.listServed()).map((e) => e.exportName);
      } catch {
        exportsServed = null;
      }
      return packInventory({ dm: dmEntries, devices, exportsConfigured, exportsServed });
    },
    /** Remove an orphan dm device, but only if it is (still) not open: never pull a device from a client. */
    async hostRemoveIdleDm(a: { name: string }): Promise<'removed' | 'open' | 'gone'> {
      return lock.run(async () => {
        const info = await dm.info(a.name);
        if (!info) return 'gone';
        if (info.openCount > 0) return 'open';
        await dm.remove(a.name);
        return 'removed';
      });
    },
  });
}

export type HostActivities = ReturnType<typeof createHostActivities>;
