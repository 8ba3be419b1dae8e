import { CancellationScope, isCancellation } from '@temporalio/workflow';
import type { DeleteInput, OperationResult } from '../src/domain/operations.js';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { activitiesFor } from './proxies.js';
import { Saga } from './saga.js';
import { engineExportNameOf, exportNameOf, mapperPathOf } from '../src/domain/device-names.js';

/**
 * delete: remove export [re-create] → remove dm device [re-create as it was] → detach if
 * attached [re-attach] → CloudStack delete — the PIVOT: nothing after it is undone →
 * remove the database rows (the audit trail stays).
 */
export async function deleteVolume(input: DeleteInput): Promise<OperationResult> {
  const acts = activitiesFor(input);
  const { cloudstack, control, host, correlation } = acts;
  const saga = new Saga(input, 'delete', acts, input);
  return saga.run(async () => {
    const { mapping, volume, exportRow } = await saga.step('validate', async () => ({
      mapping: await control.dbGetMapping(input.volumeId),
      volume: await control.csGetVolume(input.volumeId),
      exportRow: await control.dbGetExport(input.volumeId),
    }));
    const result: OperationResult = {
      operationId: input.operationId,
      type: 'delete',
      volumeId: input.volumeId,
      status: 'completed',
      location: 'deleted',
    };
    if (!mapping && !volume) return { ...result, noop: true };
    const name = mapping?.persistentName ?? null;
    if (name) saga.describe({ persistentName: name, vmName: mapping!.sourceVmName });

    if (name) {
      const exportName = exportNameOf(name);
      const mapperPath = mapperPathOf(name);
      const aliases = [engineExportNameOf(input.volumeId)];
      const configured = await host.hostExportConfigured(exportName);
      await saga.writeStep(
        'remove-export',
        async (audit) => {
          await host.hostExportRemove({ exportName, aliases });
          await control.dbDeleteExport({ volumeId: input.volumeId, audit });
        },
        async () => {
          if (configured) await host.hostExportEnsure({ exportName, targetPath: mapperPath, aliases });
          if (exportRow) await control.dbUpsertExport(exportRow);
        },
      );

      const previous = await host.hostDmTable(name);
      await saga.step(
        'remove-dm',
        () => host.hostDmRemove({ name }),
        async () => {
          if (!previous) return;
          // Undo: linear over whatever device carries the volume now (it may have been
          // re-attached as another /dev/vdX), else the table as it was.
          const dev =
            previous.kind === 'linear' ? await host.hostFindBySerial(diskSerialFor(input.volumeId)) : null;
          if (dev) await host.hostDmEnsureLinear({ name, devicePath: dev.devicePath });
          else await host.hostDmEnsureTable({ name, table: previous });
        },
      );
    }

    if (volume?.attachedTo) {
      const from = volume.attachedTo;
      await saga.step(
        'cloudstack-detach',
        () => cloudstack.csDetach({ volumeId: input.volumeId, fromVmId: from }),
        async () => {
          await cloudstack.csAttach({ volumeId: input.volumeId, vmId: from });
          if (from === input.applianceVmId) {
            await correlation.hostCorrelate({
              serial: diskSerialFor(input.volumeId),
              expectedSizeBytes: volume.sizeBytes,
              timeoutMs: input.correlationTimeoutMs,
            });
          }
        },
      );
    }

    if (volume) {
      try {
        await saga.step('cloudstack-delete', () => cloudstack.csDelete({ volumeId: input.volumeId }));
      } catch (err) {
        // The delete may be done although the step failed (the job finished, its reply was
        // lost): CloudStack says. Gone → the pivot is passed, finish forward; undoing the steps
        // before it would only fail against a volume that no longer exists.
        // (patched: a delete that failed there under the previous release compensated.)
        if (
          isCancellation(err) ||
          !acts.has('delete-asks-cloudstack-after-failed-delete') ||
          (await control.csGetVolume(input.volumeId))
        )
          throw err;
      }
    }
    // The pivot: the CloudStack delete or, for a volume CloudStack no longer has, removing its
    // rows. A cancel is too late from here: the delete is finished forward, never half-left.
    saga.pivot();
    await CancellationScope.nonCancellable(() =>
      saga.writeStep('remove-rows', (audit) => control.dbDeleteMapping({ volumeId: input.volumeId, audit })),
    );
    return result;
  });
}
