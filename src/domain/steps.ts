/**
 * The saga steps, named once. The step library (workflows/volume-steps.ts) runs them, the audit
 * trail stores their names (`volume_operation_steps.step`), and the activities check a step
 * audit against the same list: a step that is not here does not compile, and an audit row that
 * names an unknown step is refused. Dependency-free: the workflow bundle uses it.
 */
export const STEP_NAMES = [
  /** Read what the operation decides on; changes nothing. */
  'validate',
  'assign-name',
  /** Reconciliation names an old row that has none. */
  'adopt-name',
  'cloudstack-create',
  'cloudstack-attach',
  'cloudstack-attach-target',
  'cloudstack-detach',
  'cloudstack-detach-target',
  'cloudstack-delete',
  'correlate',
  'resolve-conflicts',
  'dm-map',
  'dm-error',
  'remove-dm',
  'record-mapping',
  'record-location',
  'ensure-export',
  'remove-export',
  'remove-rows',
] as const;

export type StepName = (typeof STEP_NAMES)[number];

/** What an operator may answer a compensation that failed (workflows/saga.ts). */
export const OPERATOR_ACTIONS = ['retry', 'skip', 'abort'] as const;
export type OperatorActionName = (typeof OPERATOR_ACTIONS)[number];

/** The audit trail's name of a step's compensation, and of an operator's decision. */
export type AuditStepName = StepName | `undo:${StepName}` | `operator:${OperatorActionName}`;

export const undoStepName = (step: StepName): AuditStepName => `undo:${step}`;
export const operatorStepName = (action: OperatorActionName): AuditStepName => `operator:${action}`;

/** Steps that only read: a refusal after them has still changed nothing. */
export const READ_ONLY_STEPS: ReadonlySet<StepName> = new Set<StepName>(['validate']);

const AUDIT_STEP_NAMES: ReadonlySet<string> = new Set<string>([
  ...STEP_NAMES,
  ...STEP_NAMES.map((s) => `undo:${s}`),
  ...OPERATOR_ACTIONS.map((a) => `operator:${a}`),
]);

/** Whether `name` is a step the audit trail may hold. */
export function isAuditStepName(name: string): name is AuditStepName {
  return AUDIT_STEP_NAMES.has(name);
}
