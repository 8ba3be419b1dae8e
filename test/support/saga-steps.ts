/**
 * Every step of every saga, and the activity whose fault makes that step fail. Checked against
 * what the workflows really do by test/workflow/sagas.test.ts: a renamed or moved step fails there.
 */
export type Saga = 'attach' | 'detach' | 'failover' | 'failback' | 'delete';
/** The steps attach and failback share (workflows/volume-steps.ts bringToAppliance). */
const BRING_TO_APPLIANCE: [step: string, activity: string][] = [
  ['cloudstack-attach', 'csAttach'],
  ['correlate', 'hostCorrelate'],
  ['resolve-conflicts', 'dbClearStaleDevicePath'],
  ['dm-map', 'hostDmEnsureLinear'],
  ['record-mapping', 'dbUpdateMapping'],
  ['ensure-export', 'dbUpsertExport'],
];

/** Each step, and the activity whose fault makes it fail (the last one the step calls). */
export const STEPS: Record<Saga, [step: string, activity: string][]> = {
  attach: [['validate', 'csGetVolume'], ['assign-name', 'dbAssignName'], ...BRING_TO_APPLIANCE],
  detach: [
    ['validate', 'csGetVolume'],
    ['dm-error', 'hostDmEnsureError'],
    ['cloudstack-detach', 'hostWaitGone'],
    ['record-location', 'dbUpdateMapping'],
  ],
  failover: [
    ['validate', 'csGetVolume'],
    ['dm-error', 'hostDmEnsureError'],
    ['cloudstack-detach', 'hostWaitGone'],
    ['cloudstack-attach-target', 'csAttach'],
    ['record-location', 'dbUpdateMapping'],
  ],
  failback: [['validate', 'csGetVolume'], ['cloudstack-detach-target', 'csDetach'], ...BRING_TO_APPLIANCE],
  delete: [
    ['validate', 'dbGetExport'],
    ['remove-export', 'dbDeleteExport'],
    ['remove-dm', 'hostDmRemove'],
    ['cloudstack-detach', 'csDetach'],
    // The pivot: CloudStack refuses (it cannot "delete and fail" — after a delete nothing is undone).
    ['cloudstack-delete', 'csDelete'],
  ],
};
