import { Context } from '@temporalio/activity';
import { z } from 'zod';
import {
  devicePathSchema,
  dmTableSchema,
  type DeviceCorrelator,
  type DeviceMapperApi,
  type DmTable,
  type ResolvedDevice,
} from '../../src/device/types.js';
import type { ExportBackend } from '../../src/nbd/types.js';
import { targetPathSchema } from '../../src/domain/paths.js';
import { exportSpecSchema } from '../../src/nbd/validation.js';
import { packInventory, type PackedInventory } from '../../src/reconcile/inventory-codec.js';
import { persistentNameSchema, exportNameSchema } from '../../src/domain/naming.js';
import { DM_UUID_PREFIX } from '../../src/domain/device-names.js';
import { heartbeatWith } from '../heartbeat.js';
import { activity, positional, typed } from '../define.js';
import { withClassification } from '../failures.js';
import { HostLock } from './lock.js';

/**
 * The fields the activities' schemas are made of; each activity's own schema comes with it, below.
 * Inputs are checked on entry (activities/define.ts), so a refusal names the field — `name`,
 * `devicePath`, `table.device` — and nothing has run yet: no dmsetup, no stat, no file access.
 * The schemas transform nothing: each activity goes on with exactly the values it was given.
 */
const name = persistentNameSchema;
const exportName = exportNameSchema;
/** A virtio serial becomes part of a path (`/dev/disk/by-id/virtio-<serial>`): no `/`, no blanks. */
const serial = z.string().regex(/^[A-Za-z0-9._:+-]{1,64}$/, 'must be 1 to 64 letters, digits or . _ : + -');
const timeoutMs = z.number().int('must be an integer').min(0, 'must be at least 0');
const sectors = z.number('must be a number').int('must be an integer').positive('must be positive');
/** More names for the same export (the engine's `migration-vol-<volume id>`): served alike. */
const aliases = z.array(exportName).max(4, 'must be at most 4 names').optional();
/** A dm device name and the device it maps. */
const linear = z.object({ name, devicePath: devicePathSchema });

export interface HostDeps {
  correlator: DeviceCorrelator;
  dm: DeviceMapperApi;
  exports: ExportBackend;
  /**
   * The NBD server process, when this worker manages it (NBD_MANAGE_SERVER): the export step
   * starts it again if it has died, so an attach never ends with an export nothing serves.
   */
  nbdServer?: { ensureRunning(): Promise<unknown> };
}

/**
 * Activities that must run on the appliance itself. They never touch the database. Each is
 * declared once: its schema, the type of its argument (derived from the schema), its function.
 * All are of kind `host` (activities/control/kinds.ts): they run on their appliance's queue.
 */
export function createHostActivities({ correlator, dm, exports, nbdServer }: HostDeps) {
  const lock = new HostLock();
  // One export's file or link, not the whole directory: an appliance holds hundreds.
  const exportConfigured = async (exportName: string) => (await exports.configured(exportName)) !== undefined;

  return withClassification({
    async hostListDevices(): Promise<string[]> {
      return correlator.listDevices();
    },
    /** Wait for the device carrying `serial`; heartbeats while waiting (heartbeatTimeout applies). */
    hostCorrelate: activity(
      z.object({
        serial,
        expectedSizeBytes: z.number().int('must be an integer').min(0, 'must be at least 0').optional(),
        devicesBefore: z.array(z.string()).optional(),
        timeoutMs,
      }),
      async (a): Promise<ResolvedDevice> => {
        const ctx = Context.current();
        heartbeatWith(ctx, { waitingFor: a.serial });
        return correlator.waitForDevice({
          ...a,
          onWaiting: (elapsedMs, seen) => heartbeatWith(ctx, { waitingFor: a.serial, elapsedMs, seen }),
          signal: ctx.cancellationSignal,
        });
      },
    ),
    hostFindBySerial: positional(
      'serial',
      serial,
      async (serial): Promise<ResolvedDevice | null> => (await correlator.findBySerial(serial)) ?? null,
    ),
    hostWaitGone: activity(z.object({ serial, timeoutMs }), async (a): Promise<void> => {
      const ctx = Context.current();
      ctx.heartbeat();
      await correlator.waitForGone(a.serial, a.timeoutMs, ctx.cancellationSignal);
    }),
    hostDmTable: positional(
      'name',
      name,
      async (n): Promise<DmTable | null> => (await dm.info(n))?.table ?? null,
    ),
    hostDmEnsureLinear: activity(linear, async (a) => lock.run(() => dm.ensureLinear(a.name, a.devicePath))),
    hostDmEnsureError: activity(z.object({ name, sectors }), async (a) =>
      lock.run(() => dm.ensureError(a.name, a.sectors)),
    ),
    hostDmEnsureTable: activity(
      // dmTableSchema is declared as a schema of DmTable output; the argument is a DmTable.
      z.object({ name, table: typed<DmTable>()(dmTableSchema) }),
      async (a) => lock.run(() => dm.ensureTable(a.name, a.table)),
    ),
    hostDmRemove: activity(z.object({ name }), async (a) => lock.run(() => dm.remove(a.name))),
    /**
     * Conflicts before mapping `devicePath` as `name`: other dm devices whose table points at the
     * same device (left by a volume that used this /dev/vdX before). They are stale by
     * definition — the kernel now gives that device to our volume — so they are pointed at an
     * error target (never removed while open; reconciliation removes them once idle).
     */
    hostResolveConflicts: activity(linear, async (a): Promise<string[]> =>
      lock.run(async () => {
        const resolved: string[] = [];
        const mine = await dm.deviceNumber(a.devicePath);
        for (const other of await dm.list()) {
          if (other === a.name) continue;
          const info = await dm.info(other);
          // Only devices we created (dm UUID VOLLIFE-…) are ever changed here.
          if (!info || !info.uuid.startsWith(DM_UUID_PREFIX) || info.table.kind !== 'linear') continue;
          if (info.table.device === a.devicePath || info.table.device === mine) {
            await dm.ensureError(other, info.table.sectors);
            resolved.push(other);
          }
        }
        return resolved;
      }),
    ),
    /** The export, and each alias, serving `targetPath`; the answer is the export's own. */
    hostExportEnsure: activity(exportSpecSchema.extend({ aliases }), async (a) => {
      const r = await lock.run(async () => {
        const done = await exports.ensure({ exportName: a.exportName, targetPath: a.targetPath });
        for (const alias of a.aliases ?? [])
          await exports.ensure({ exportName: alias, targetPath: a.targetPath });
        await nbdServer?.ensureRunning(); // fails (and is retried) while it cannot be started
        return done;
      });
      return { ...r, backend: exports.kind, uri: exports.uriFor(a.exportName) };
    }),
    /**
     * Remove an export. With `onlyIfTarget` (compensations), only an export of ours serving that
     * path is removed: whatever else sits under the name was not made by this run. Each alias is
     * removed by the same rule; the answer is the export's own.
     */
    hostExportRemove: activity(
      z.object({ exportName, onlyIfTarget: targetPathSchema.optional(), aliases }),
      async (a) => {
        const removeOne = async (exportName: string) => {
          if (a.onlyIfTarget !== undefined) {
            if ((await exports.configured(exportName))?.targetPath !== a.onlyIfTarget)
              return { removed: false };
          }
          return exports.remove(exportName);
        };
        return lock.run(async () => {
          for (const alias of a.aliases ?? []) await removeOne(alias);
          return removeOne(a.exportName);
        });
      },
    ),
    hostExportConfigured: positional('exportName', exportName, async (exportName): Promise<boolean> =>
      exportConfigured(exportName),
    ),
    /** A volume's appliance side before a saga changes it: its dm table and whether it is exported. */
    hostVolumeState: activity(
      z.object({ name, exportName }),
      async (a): Promise<{ dmTable: DmTable | null; exportConfigured: boolean }> => {
        const [info, configured] = await Promise.all([dm.info(a.name), exportConfigured(a.exportName)]);
        return { dmTable: info?.table ?? null, exportConfigured: configured };
      },
    ),

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
    hostRemoveIdleDm: activity(z.object({ name }), async (a): Promise<'removed' | 'open' | 'gone'> =>
      lock.run(async () => {
        const info = await dm.info(a.name);
        if (!info) return 'gone';
        if (info.openCount > 0) return 'open';
        await dm.remove(a.name);
        return 'removed';
      }),
    ),
  });
}

export type HostActivities = ReturnType<typeof createHostActivities>;
