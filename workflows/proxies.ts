import {
  ActivityCancellationType,
  CancellationScope,
  patched,
  proxyActivities,
  proxyLocalActivities,
  type ActivityInterfaceFor,
} from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control/index.js';
import { namesOfKind, type ControlActivitiesOfKind, type ControlKind } from '../activities/control/kinds.js';
import type { HostActivities } from '../activities/host/index.js';
import type { WorkflowContext } from '../src/domain/operations.js';
import { hostQueue } from '../src/temporal/task-queues.js';
import { NON_RETRYABLE_TYPES } from '../src/domain/failures.js';

/** Failures that retrying cannot fix (src/domain/failures.ts); everything else retries, bounded. */
const NON_RETRYABLE = [...NON_RETRYABLE_TYPES];

/** Control steps, remote or local: the same bounded backoff. */
const CONTROL_RETRY = {
  initialInterval: '500 ms',
  backoffCoefficient: 2,
  maximumInterval: '20 seconds',
  maximumAttempts: 8,
  nonRetryableErrorTypes: NON_RETRYABLE,
} as const;

/**
 * Activity stubs for one operation. Control activities run on the workflow's own (control)
 * queue; host activities on the appliance's queue, with a schedule-to-start timeout so a dead
 * appliance shows as a failure instead of an endless wait.
 */
export function activitiesFor(ctx: WorkflowContext) {
  const has = changesInForce();
  // On cancel, wait for the step in flight to settle before compensating: an activity told to
  // stop may still act (a dm reload, a CloudStack job), and an undo that runs before it would
  // undo nothing and leave the late action behind. Runs started before this rule keep theirs.
  const cancellationType = has('cancel-waits-for-step-in-flight')
    ? ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    : ActivityCancellationType.TRY_CANCEL;
  const remoteControl = proxyActivities<ControlActivities>({
    cancellationType,
    startToCloseTimeout: '3 minutes',
    // The control worker heartbeats while any activity runs: a dead one is noticed in seconds.
    heartbeatTimeout: '10 seconds',
    retry: CONTROL_RETRY,
  });
  const hostOptions = {
    cancellationType,
    taskQueue: hostQueue(ctx.taskQueuePrefix, ctx.applianceVmId),
    // Long enough for the appliance to reboot or its worker to restart (a slow start must not
    // fail a saga, nor its undo), short enough that a dead appliance ends as a failure.
    scheduleToStartTimeout: '10 minutes',
    startToCloseTimeout: '1 minute',
    // The host worker heartbeats while any activity runs: a dead appliance worker is noticed
    // (and the step retried on its successor) in seconds.
    heartbeatTimeout: '15 seconds',
    retry: {
      initialInterval: '500 ms',
      backoffCoefficient: 2,
      maximumInterval: '10 seconds',
      maximumAttempts: 6,
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  } as const;
  const host = proxyActivities<HostActivities>(hostOptions);
  // Correlation waits for the kernel; it heartbeats, so a dead appliance is noticed in seconds.
  const correlation = proxyActivities<HostActivities>({
    ...hostOptions,
    startToCloseTimeout: ctx.correlationTimeoutMs + 30_000,
    heartbeatTimeout: '20 seconds',
    retry: { ...hostOptions.retry, maximumAttempts: 2 },
  });
  // Steps that only read or write our database, or only read CloudStack, run as local
  // activities on the control worker that runs the workflow: no task-queue round trip, no
  // activity events in the history. Each is safe to run twice (a local activity re-runs when
  // the worker dies before its workflow task completes). CloudStack mutations stay remote: their
  // async jobs outlive a workflow task and resume from heartbeat details. Runs started before
  // this change keep every control step remote. Which step is which: its kind, `local` or
  // `remote` (activities/control/kinds.ts).
  const control = has('control-reads-and-db-writes-local')
    ? finishBeforeCancel(
        has,
        ofKind(
          'local',
          proxyLocalActivities<ControlActivities>({
            cancellationType,
            startToCloseTimeout: '30 seconds',
            retry: CONTROL_RETRY,
          }),
        ),
      )
    : ofKind('local', remoteControl);
  const cloudstack = ofKind('remote', remoteControl);
  // The audit trail (kind `audit`) is written from the control worker itself: short, local, retried.
  const audit = ofKind(
    'audit',
    proxyLocalActivities<ControlActivities>({
      startToCloseTimeout: '10 seconds',
      retry: { initialInterval: '200 ms', maximumInterval: '5 seconds', maximumAttempts: 20 },
    }),
  );
  return { cloudstack, control, host, correlation, audit, has };
}

/** The workflow-code changes made through `patched()` before the first baseline below. */
const BEFORE_2026_12_04 = [
  'cancel-waits-for-step-in-flight',
  'control-reads-and-db-writes-local',
  'local-steps-finish-before-cancel',
  'volume-reads-one-host-call',
  'attach-reads-in-parallel',
  'delete-asks-cloudstack-after-failed-delete',
] as const;
/** … and those after it, before the second. */
type Before20261206 = 'step-row-in-its-write';
type Change = (typeof BEFORE_2026_12_04)[number] | Before20261206;
const inFirstBaseline: ReadonlySet<Change> = new Set(BEFORE_2026_12_04);

/**
 * Whether a change is in force for this run. Each `patched()` costs every new run a marker and a
 * TemporalChangeVersion upsert; a run started on this code or later records one marker,
 * `baseline-2026-12-06`, that stands for every change before it, and has them all without theirs.
 * A run started on the code of the baseline before (`baseline-2026-12-04` in its history) has the
 * changes that baseline stood for and checks each later one on its own; a run started before any
 * baseline checks every change on its own, where its code runs, exactly as it did. Baselines are
 * checked once, when the workflow starts, newest first (a new run records only the newest). A
 * change made after the newest is a plain `patched()` of its own, until the next baseline.
 */
function changesInForce(): (change: Change) => boolean {
  const newest = patched('baseline-2026-12-06');
  const first = newest || patched('baseline-2026-12-04');
  return (change) => newest || (first && inFirstBaseline.has(change)) || patched(change);
}

/**
 * A local step is never cancelled: it runs to its end and the saga sees the cancel right after
 * it. Cancelling a local activity in flight could fail the workflow task with a nondeterminism
 * error ("invalid transition in state machine", SDK 1.24; seen in the workflow tier) and hang the
 * saga. A database step takes milliseconds; waiting for it costs nothing. Runs started before
 * this rule keep theirs.
 */
function finishBeforeCancel<T extends object>(has: (change: Change) => boolean, steps: T): T {
  if (!has('local-steps-finish-before-cancel')) return steps;
  return new Proxy(steps, {
    get(target, key) {
      const step = Reflect.get(target, key) as (...args: unknown[]) => Promise<unknown>;
      return (...args: unknown[]) => CancellationScope.nonCancellable(() => step(...args));
    },
  });
}

/**
 * The stubs of the control activities of one kind, and only those: a workflow reaches an
 * activity only through the proxy its kind says. Taking a stub from a proxy schedules nothing
 * (calling it does), so this changes no command a workflow emits.
 */
function ofKind<K extends ControlKind>(
  kind: K,
  stubs: ActivityInterfaceFor<ControlActivities>,
): ControlActivitiesOfKind<K> {
  return Object.fromEntries(
    namesOfKind(kind).map((name) => [name, stubs[name]]),
  ) as ControlActivitiesOfKind<K>;
}

export type Activities = ReturnType<typeof activitiesFor>;
