import {
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  condition,
  isCancellation,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type {
  OperationResult,
  OperationType,
  OperatorAction,
  SagaProgress,
  WorkflowContext,
} from '../src/domain/operations.js';
import { SA } from '../src/temporal/search-attributes.js';
import { operatorUpdate, progressQuery } from './messages.js';
import { REFUSAL_TYPES, type FailureType } from '../src/domain/failures.js';
import {
  OPERATOR_ACTIONS,
  operatorStepName,
  READ_ONLY_STEPS,
  undoStepName,
  type AuditStepName,
  type StepName,
} from '../src/domain/steps.js';
import type { StepAudit } from '../src/db/operations.js';
import type { Activities } from './proxies.js';

export { operatorUpdate, progressQuery } from './messages.js';

interface Compensation {
  step: StepName;
  undo: () => Promise<unknown>;
}

/**
 * The saga runner. Rules (docs/sagas.md):
 * - a step's compensation is registered BEFORE the step runs, and is written as "undo if
 *   present", because the step most likely to be half-done is the one that just failed;
 * - compensations run newest first in a non-cancellable scope, each an activity with bounded
 *   retries; one that still fails parks the workflow (NeedsAttention) for an operator's update:
 *   retry, skip (audited, with a reason) or abort — it is never swallowed;
 * - after `pivot()` nothing is undone;
 * - every step and compensation is written to the audit tables.
 */
export class Saga {
  private readonly compensations: Compensation[] = [];
  private readonly progress: SagaProgress;
  private seq = 0;
  private decision: OperatorAction | undefined;
  private readonly forward = new CancellationScope();
  private abortReason: string | undefined;
  private pivoted = false;
  /** A forward step is running; false once it completed, until the next one is entered. */
  private inStep = false;

  constructor(
    private ctx: WorkflowContext,
    readonly type: OperationType,
    private readonly acts: Activities,
    private readonly request: unknown,
    private readonly vmId: string | null = null,
  ) {
    this.progress = {
      operationId: ctx.operationId,
      type,
      currentStep: null,
      stepsDone: [],
      compensationsRun: [],
      needsAttention: null,
      state: 'running',
    };
    setHandler(progressQuery, () => this.progress);
    setHandler(
      operatorUpdate,
      (action) => {
        if (action.action === 'abort') {
          if (this.progress.state === 'running') {
            this.abortReason = `${action.operator}: ${action.reason}`;
            this.forward.cancel();
            return 'aborting: completed steps will be compensated';
          }
          if (this.progress.state !== 'waiting-for-operator')
            return `nothing to abort (${this.progress.state})`;
        }
        this.decision = action;
        return `accepted: ${action.action}`;
      },
      {
        validator: (action) => {
          if (!action || !(OPERATOR_ACTIONS as readonly string[]).includes(action.action)) {
            throw new Error('action: must be "retry", "skip" or "abort"');
          }
          if (typeof action.reason !== 'string' || action.reason.trim() === '') {
            throw new Error('reason: a reason is required');
          }
          if (action.action !== 'abort' && this.progress.state !== 'waiting-for-operator') {
            throw new Error(
              `action: "${action.action}" is only valid while a compensation waits for an operator`,
            );
          }
        },
      },
    );
  }

  /** Run the forward steps; on failure or cancel, compensate and end with a clear failure. */
  async run(body: () => Promise<OperationResult>): Promise<OperationResult> {
    const info = workflowInfo();
    upsertSearchAttributes([
      // A create learns its volume id from CloudStack (volumeKnown).
      ...(this.ctx.volumeId ? [{ key: SA.VolumeId, value: this.ctx.volumeId }] : []),
      { key: SA.ApplianceVmId, value: this.ctx.applianceVmId },
      { key: SA.OperationType, value: this.type },
      { key: SA.NeedsAttention, value: false },
    ]);
    await this.acts.audit.auditOperationStart({
      operationId: this.ctx.operationId,
      workflowId: info.workflowId,
      runId: info.runId,
      type: this.type,
      volumeId: this.ctx.volumeId || null,
      vmId: this.vmId,
      request: this.request,
    });
    // A cancel that arrived while the last step was in flight is named at that step.
    let cancelledInLastStep = false;
    try {
      const result = await this.forward.run(body);
      // A cancel that arrived while the last step was in flight still undoes the operation —
      // unless it passed its pivot, after which it is finished forward.
      if (this.forward.consideredCancelled && !this.pivoted) {
        cancelledInLastStep = true;
        throw new CancelledFailure('cancelled while the last step was in flight');
      }
      this.progress.state = 'completed';
      this.progress.currentStep = null;
      upsertSearchAttributes([{ key: SA.SagaStep, value: 'done' }]);
      setCurrentDetails(`${this.type} completed`);
      // Non-cancellable: an operation that finished (e.g. past its pivot) while a cancel was
      // pending is completed, and recorded so — not turned into a cancel by its audit write.
      await CancellationScope.nonCancellable(() =>
        this.acts.audit.auditOperationStatus({
          operationId: this.ctx.operationId,
          status: 'completed',
          response: result,
          finished: true,
        }),
      );
      return result;
    } catch (err) {
      const failedStep = this.progress.currentStep ?? 'start';
      // Outside any step — a check on what a step returned, or a read preparing the next step —
      // the failure is named after the step before it, not blamed on it.
      const where = this.inStep || cancelledInLastStep || failedStep === 'start' ? 'at' : 'after';
      const cancelled = isCancellation(err);
      const reason = cancelled
        ? this.abortReason
          ? `aborted by ${this.abortReason}`
          : 'cancelled'
        : messageOf(err);
      // A refusal (a check said no before anything changed) is audited as such, not as
      // "compensated": the undo steps registered so far still run, and find nothing to undo.
      const refused =
        !cancelled && isRefusal(err) && this.progress.stepsDone.every((s) => READ_ONLY_STEPS.has(s));
      const outcome = await CancellationScope.nonCancellable(() => this.compensate());
      this.progress.state = 'failed';
      const summary =
        `${this.type} of volume ${this.ctx.volumeId} ${cancelled ? 'was cancelled' : 'failed'} ${where} step ` +
        `"${failedStep}": ${reason}; ` +
        (this.pivoted
          ? `past its point of no return, nothing undone: run the ${this.type} again to finish it`
          : outcome === 'compensated'
            ? `compensated: ${this.progress.compensationsRun.map((c) => `${c.step}=${c.status}`).join(', ') || 'nothing to undo'}`
            : 'compensation abandoned by an operator; reconciliation will finish the clean-up');
      setCurrentDetails(summary);
      await CancellationScope.nonCancellable(() =>
        this.acts.audit.auditOperationStatus({
          operationId: this.ctx.operationId,
          // Past the pivot nothing was undone: failed, not "compensated".
          status: cancelled
            ? 'cancelled'
            : outcome !== 'compensated' || this.pivoted
              ? 'failed'
              : refused
                ? 'refused'
                : 'compensated',
          error: summary,
          finished: true,
        }),
      );
      if (cancelled && !this.abortReason) throw err; // the workflow ends as Cancelled
      throw ApplicationFailure.nonRetryable(summary, cancelled ? 'OperationAborted' : 'OperationFailed', {
        step: failedStep,
        reason,
        compensations: this.progress.compensationsRun,
      });
    }
  }

  /**
   * One forward step. `undo` (if any) is registered before `action` runs.
   */
  step<T>(step: StepName, action: () => Promise<T>, undo?: () => Promise<unknown>): Promise<T> {
    return this.forwardStep(step, action, undo, false);
  }

  /**
   * A forward step that ends in a database write of ours: `action` passes `audit` to that write,
   * which records the step completed in its own transaction — the row exists exactly when the
   * write does, and the step costs no audit activity of its own. A failure is recorded as any
   * step's (it overwrites the row if the write committed before its reply was lost). Runs started
   * before this change get no `audit` and record the step separately, as they did.
   */
  writeStep<T>(
    step: StepName,
    action: (audit: StepAudit | undefined) => Promise<T>,
    undo?: () => Promise<unknown>,
  ): Promise<T> {
    return this.forwardStep(step, action, undo, this.acts.has('step-row-in-its-write'));
  }

  private async forwardStep<T>(
    step: StepName,
    action: (audit: StepAudit | undefined) => Promise<T>,
    undo: (() => Promise<unknown>) | undefined,
    recordedByAction: boolean,
  ): Promise<T> {
    if (undo) this.compensations.push({ step, undo });
    this.enter(step);
    const seq = ++this.seq;
    const startedAt = new Date().toISOString();
    try {
      const audit = recordedByAction
        ? { operationId: this.ctx.operationId, seq, step, startedAt }
        : undefined;
      const result = await action(audit);
      this.inStep = false;
      this.progress.stepsDone.push(step);
      // Non-cancellable: a step that completed while a cancel was pending is still recorded as
      // done (and a pivot step reaches its pivot), instead of failing on its own audit write.
      if (!audit)
        await CancellationScope.nonCancellable(() =>
          this.record(seq, step, 'forward', 'completed', startedAt),
        );
      return result;
    } catch (err) {
      await CancellationScope.nonCancellable(() =>
        this.record(
          seq,
          step,
          'forward',
          'failed',
          startedAt,
          isCancellation(err) ? 'cancelled' : messageOf(err),
        ),
      );
      throw err;
    }
  }

  /** A create's volume now exists: its id goes on the search attributes and the audit row. */
  async volumeKnown(volumeId: string): Promise<void> {
    this.ctx = { ...this.ctx, volumeId };
    upsertSearchAttributes([{ key: SA.VolumeId, value: volumeId }]);
    await CancellationScope.nonCancellable(() =>
      this.acts.audit.auditOperationStatus({
        operationId: this.ctx.operationId,
        status: 'running',
        volumeId,
      }),
    );
  }

  /** After this point nothing is compensated (e.g. the volume is deleted in CloudStack). */
  pivot(): void {
    this.compensations.length = 0;
    this.pivoted = true;
  }

  describe(attrs: { persistentName?: string; vmName?: string }): void {
    const pairs = [];
    if (attrs.persistentName) pairs.push({ key: SA.PersistentName, value: attrs.persistentName });
    if (attrs.vmName) pairs.push({ key: SA.VmName, value: attrs.vmName });
    if (pairs.length) upsertSearchAttributes(pairs);
  }

  private enter(step: AuditStepName): void {
    this.inStep = true;
    this.progress.currentStep = step;
    upsertSearchAttributes([{ key: SA.SagaStep, value: step }]);
    setCurrentDetails(`${this.type} of volume ${this.ctx.volumeId}: ${this.progress.state} — step ${step}`);
  }

  private async compensate(): Promise<'compensated' | 'abandoned'> {
    this.progress.state = 'compensating';
    for (const c of [...this.compensations].reverse()) {
      const name = undoStepName(c.step);
      this.enter(name);
      for (;;) {
        const seq = ++this.seq;
        const startedAt = new Date().toISOString();
        try {
          await c.undo();
          this.progress.compensationsRun.push({ step: c.step, status: 'completed' });
          await this.record(seq, name, 'compensation', 'completed', startedAt);
          break;
        } catch (err) {
          const error = messageOf(err);
          await this.record(seq, name, 'compensation', 'failed', startedAt, error);
          const decision = await this.waitForOperator(c.step, error);
          await this.record(
            ++this.seq,
            operatorStepName(decision.action),
            'operator',
            'completed',
            startedAt,
            null,
            decision,
          );
          if (decision.action === 'retry') continue;
          this.progress.compensationsRun.push({ step: c.step, status: 'skipped' });
          if (decision.action === 'skip') break;
          return 'abandoned';
        }
      }
    }
    return 'compensated';
  }

  private async waitForOperator(step: StepName, error: string): Promise<OperatorAction> {
    this.progress.state = 'waiting-for-operator';
    this.progress.needsAttention = { step, error };
    upsertSearchAttributes([{ key: SA.NeedsAttention, value: true }]);
    setCurrentDetails(
      `NEEDS ATTENTION: compensation of "${step}" failed: ${error}. ` +
        `Send the "operator" update with action retry, skip or abort (volumectl abort/retry).`,
    );
    await this.acts.audit.auditOperationStatus({
      operationId: this.ctx.operationId,
      status: 'needs_attention',
      error,
    });
    await condition(() => this.decision !== undefined);
    const d = this.decision!;
    this.decision = undefined;
    this.progress.needsAttention = null;
    this.progress.state = 'compensating';
    upsertSearchAttributes([{ key: SA.NeedsAttention, value: false }]);
    return d;
  }

  private record(
    seq: number,
    step: AuditStepName,
    phase: 'forward' | 'compensation' | 'operator',
    status: 'completed' | 'failed' | 'skipped',
    startedAt: string,
    error: string | null = null,
    details?: unknown,
  ): Promise<void> {
    return this.acts.audit.auditStep({
      operationId: this.ctx.operationId,
      seq,
      step,
      phase,
      status,
      error,
      details,
      startedAt,
      finishedAt: new Date().toISOString(),
    });
  }
}

function isRefusal(err: unknown): boolean {
  for (let e = err as { type?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e instanceof ApplicationFailure && typeof e.type === 'string' && REFUSAL_TYPES.has(e.type))
      return true;
  }
  return false;
}

/** The most specific message in a failure chain (ActivityFailure → ApplicationFailure → …). */
export function messageOf(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  let msg = e?.message ?? String(err);
  while (e?.cause) {
    e = e.cause as { message?: string; cause?: unknown };
    if (e?.message) msg = e.message;
  }
  return msg;
}

export function permanentFailure(message: string, type: FailureType): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, type);
}
