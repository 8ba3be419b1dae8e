import type { ControlActivities } from './index.js';

/**
 * Where each control activity runs. workflows/proxies.ts builds its stubs from this table, inside
 * the workflow bundle: this module imports nothing at run time (types only), so the bundle gets
 * the table without the activities' code, zod or mysql2.
 *
 * - `local`: a local activity on the control worker that runs the workflow (the sagas' `control`:
 *   our database reads and writes, CloudStack reads). Each is safe to run twice. Runs started
 *   before `control-reads-and-db-writes-local` run them as remote activities, as they did.
 * - `remote`: a regular activity on the control queue (the sagas' `cloudstack`: CloudStack
 *   mutations, whose async jobs outlive a workflow task and resume from heartbeat details).
 * - `audit`: a local activity with its own short retry (the sagas' `audit`: the audit trail).
 * - `reconcile`: a regular activity on the control queue, through workflows/reconcile.ts's own
 *   proxy and options; none of the sagas' proxies offers it.
 *
 * Host activities are all of kind `host`: they run on their appliance's queue (the sagas' `host`,
 * and `correlation` for `hostCorrelate` with its own timeouts; workflows/reconcile.ts's `host`).
 */
export type ControlKind = 'local' | 'remote' | 'audit' | 'reconcile';
export type Kind = ControlKind | 'host';

export const CONTROL_KINDS = {
  csGetVolume: 'local',
  csAttach: 'remote',
  csCreate: 'remote',
  csFindCreated: 'local',
  csDetach: 'remote',
  csDelete: 'remote',
  dbGetMapping: 'local',
  dbAssignName: 'local',
  dbCheckName: 'local',
  dbReleaseName: 'local',
  dbUpdateMapping: 'local',
  dbRestoreMapping: 'local',
  dbClearStaleDevicePath: 'local',
  dbDeleteMapping: 'local',
  dbGetExport: 'local',
  dbUpsertExport: 'local',
  dbDeleteExport: 'local',
  auditOperationStart: 'audit',
  auditOperationStatus: 'audit',
  auditStep: 'audit',
  reconStart: 'reconcile',
  reconCompare: 'reconcile',
  dbNameInUse: 'reconcile',
  reconFinish: 'reconcile',
} as const satisfies Record<keyof ControlActivities, ControlKind>;

/**
 * `satisfies` above refuses an activity without a kind, and (the table being an object literal)
 * a kind for an activity that does not exist; this says the second in so many words, so that it
 * holds even if the table is ever assembled from parts.
 */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Exactly<T extends true> = T;
export type KindsNameEveryActivity = Exactly<Same<keyof typeof CONTROL_KINDS, keyof ControlActivities>>;

/** The names of the control activities of one kind. */
export type NamesOfKind<K extends ControlKind> = {
  [N in keyof typeof CONTROL_KINDS]: (typeof CONTROL_KINDS)[N] extends K ? N : never;
}[keyof typeof CONTROL_KINDS];

/** The control activities of one kind, and no others. */
export type ControlActivitiesOfKind<K extends ControlKind> = Pick<ControlActivities, NamesOfKind<K>>;

/** The names of the control activities of one kind, in the table's order. */
export function namesOfKind<K extends ControlKind>(kind: K): NamesOfKind<K>[] {
  return (Object.keys(CONTROL_KINDS) as (keyof typeof CONTROL_KINDS)[]).filter(
    (n): n is NamesOfKind<K> => CONTROL_KINDS[n] === kind,
  );
}
