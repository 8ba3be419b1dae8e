/**
 * Two kinds of task queue. The control queue runs workflows and the CloudStack and database
 * activities (any number of workers). Each appliance has its own host queue, named after the
 * appliance (stable across restarts), for the device activities that must run on that machine.
 * Pure functions: imported by workflow code too.
 */
export function controlQueue(prefix: string): string {
  return `${prefix}-control`;
}

export function hostQueue(prefix: string, applianceVmId: string): string {
  return `${prefix}-host-${applianceVmId}`;
}

/** One workflow id per volume, shared by every saga and by reconciliation's repairs. */
export function volumeWorkflowId(volumeId: string): string {
  return `volume:${volumeId}`;
}

/** A create has no volume id yet: its workflow is named after its operation (idempotency key). */
export function createWorkflowId(operationId: string): string {
  return `create:${operationId}`;
}

/** A whole-VM operation (its volumes' sagas run as children under their own ids). */
export function vmWorkflowId(operationId: string): string {
  return `vm:${operationId}`;
}

export function reconcileWorkflowId(applianceVmId: string): string {
  return `reconcile:${applianceVmId}`;
}
