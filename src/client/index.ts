import { randomUUID } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { z } from 'zod';
import { volumeId as volumeIdSchema } from '../domain/ids.js';
import { diskIndexFromKey, persistentNameFor } from '../domain/naming.js';
import {
  attachRequest,
  createRequest,
  GIB,
  deleteRequest,
  detachRequest,
  failbackRequest,
  failoverRequest,
  operatorActionSchema,
  vmOperationRequest,
  type VmOperationInput,
  type OperationResult,
  type OperationType,
  type OperatorAction,
  type SagaProgress,
  type WorkflowContext,
} from '../domain/operations.js';
import { SA } from '../temporal/search-attributes.js';
import { controlQueue, createWorkflowId, vmWorkflowId, volumeWorkflowId } from '../temporal/task-queues.js';
import { operatorUpdate, progressQuery, vmProgressQuery } from '../../workflows/messages.js';
import type * as workflows from '../../workflows/index.js';

/**
 * The typed client the migration engine (and our HTTP API and CLI) use to start volume
 * operations and wait for them. Inputs are validated with zod before anything is sent; a bad
 * field raises InvalidRequestError naming it, and nothing is started.
 */
export interface ClientOptions {
  client: Client;
  taskQueuePrefix?: string;
  correlationTimeoutMs?: number;
}

export class InvalidRequestError extends Error {
  readonly code = 'invalid_request';
  constructor(readonly issues: { field: string; message: string }[]) {
    super(`invalid request: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
    this.name = 'InvalidRequestError';
  }
}

/** Another operation is running on the volume (one workflow id per volume, conflict FAIL). */
export class VolumeBusyError extends Error {
  readonly code = 'volume_busy';
  constructor(
    readonly volumeId: string,
    readonly running: {
      operationId: string | undefined;
      type: string | undefined;
      workflowId: string;
      runId: string;
    },
  ) {
    super(
      `volume ${volumeId} is busy: operation ${running.operationId ?? '?'} (${running.type ?? '?'}) is running ` +
        `as workflow ${running.workflowId} run ${running.runId}`,
    );
    this.name = 'VolumeBusyError';
  }
}

/**
 * A request that reuses an idempotency key with other values than the operation it names: never
 * "that operation again" (it would answer for a request it did not run). Names each field.
 */
export class IdempotencyMismatchError extends Error {
  readonly code = 'idempotency_mismatch';
  constructor(
    readonly operationId: string,
    readonly issues: { field: string; message: string }[],
  ) {
    super(
      `operation ${operationId} was started with other values: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')} ` +
        '(a new request needs a new idempotency key)',
    );
    this.name = 'IdempotencyMismatchError';
  }
}

/** What an operation was asked to do, as its memo keeps it: a reused key must ask the same. */
const REQUEST_FIELDS = [
  'volumeId',
  'applianceVmId',
  'targetVmId',
  'asRoot',
  'sourceVmName',
  'diskIndex',
  'name',
  'sizeGb',
  'diskOfferingId',
  'zoneId',
] as const;
type RequestPrint = Partial<Record<(typeof REQUEST_FIELDS)[number], unknown>>;
function requestPrint(type: string, input: object): RequestPrint & { type: string } {
  const out: RequestPrint & { type: string } = { type };
  for (const k of REQUEST_FIELDS) {
    const v = (input as Record<string, unknown>)[k];
    if (v !== undefined && v !== '') out[k] = v;
  }
  return out;
}
/** The fields where a retried request differs from the operation its key names. */
function mismatches(memo: unknown, type: string, input: object): { field: string; message: string }[] {
  const was = (memo as { request?: Record<string, unknown> } | undefined)?.request;
  if (!was) return []; // started by a release before the memo kept requests: nothing to compare
  const now: Record<string, unknown> = requestPrint(type, input);
  return ['type', ...REQUEST_FIELDS]
    .filter((k) => was[k] !== now[k])
    .map((k) => ({
      field: k === 'diskIndex' ? 'diskKey' : k,
      message:
        k === 'diskIndex'
          ? `was disk-${2000 + Number(was[k])}, now ${now[k] === undefined ? 'none' : `disk-${2000 + Number(now[k])}`}`
          : `was ${JSON.stringify(was[k] ?? null)}, now ${JSON.stringify(now[k] ?? null)}`,
    }));
}

export interface OperationHandle {
  operationId: string;
  type: OperationType;
  volumeId: string;
  workflowId: string;
  runId: string;
  /** True when an earlier request with the same idempotency key is what this handle points at. */
  deduplicated: boolean;
  result(): Promise<OperationResult>;
  progress(): Promise<SagaProgress>;
}

/** Each operation's workflow, by its exported name: renaming one side alone fails `tsc`. */
const WORKFLOW_TYPE: Record<Exclude<OperationType, 'repair'>, keyof typeof workflows> = {
  create: 'createVolume',
  attach: 'attachVolume',
  detach: 'detachVolume',
  failover: 'failoverVolume',
  failback: 'failbackVolume',
  delete: 'deleteVolume',
};

const VM_WORKFLOW: keyof typeof workflows = 'vmOperation';

/**
 * The VM name and disk index a request names its volume by (both or neither, as the schemas
 * require); a disk key out of VMware's range is the caller's mistake, named.
 */
function namingOf(r: { sourceVmName?: string; diskKey?: number | string }) {
  if (r.sourceVmName === undefined || r.diskKey === undefined) return {};
  try {
    return { sourceVmName: r.sourceVmName, diskIndex: diskIndexFromKey(r.diskKey) };
  } catch (e) {
    throw new InvalidRequestError([{ field: 'diskKey', message: (e as Error).message }]);
  }
}

/**
 * The line an operator scans in the Temporal UI's workflow list: the operation, the persistent
 * name when the request names the disk (`pgtest3disk0`, VM and disk key), where it goes, and the
 * volume id last: an operator at 3 a.m. looks for the name, not the UUID.
 */
export function summaryOf(
  type: string,
  input: WorkflowContext & {
    name?: string;
    sourceVmName?: string;
    diskIndex?: number;
    targetVmId?: string;
    asRoot?: boolean;
  },
): string {
  const named =
    input.sourceVmName !== undefined && input.diskIndex !== undefined
      ? {
          name: persistentNameFor(input.sourceVmName, input.diskIndex),
          vm: input.sourceVmName,
          key: 2000 + input.diskIndex,
        }
      : undefined;
  const subject = named
    ? `${named.name} (VM "${named.vm}" disk-${named.key})`
    : input.volumeId
      ? `volume ${input.volumeId}`
      : `new volume "${input.name ?? '?'}"`;
  const target = input.targetVmId
    ? ` to VM ${input.targetVmId}${input.asRoot ? ' as its root disk' : ''}`
    : '';
  const volume = named && input.volumeId ? `, volume ${input.volumeId}` : '';
  return `${type} ${subject}${target}${volume}`;
}

function parse<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (!r.success) {
    throw new InvalidRequestError(
      r.error.issues.map((i) => ({ field: i.path.join('.') || '(body)', message: i.message })),
    );
  }
  return r.data;
}

/** A volume named on its own (latest, operator): checked like the operations' `volumeId`. */
const volumeRef = z.object({ volumeId: volumeIdSchema });

export class VolumeLifecycleClient {
  private readonly prefix: string;
  private readonly correlationTimeoutMs: number;

  constructor(private readonly opts: ClientOptions) {
    this.prefix = opts.taskQueuePrefix ?? 'volume-lifecycle';
    this.correlationTimeoutMs = opts.correlationTimeoutMs ?? 60_000;
  }

  private context(r: {
    operationId?: string;
    volumeId: string;
    applianceVmId: string;
  }): WorkflowContext & { idempotent: boolean } {
    return {
      idempotent: r.operationId !== undefined,
      operationId: r.operationId ?? randomUUID(),
      volumeId: r.volumeId,
      applianceVmId: r.applianceVmId,
      taskQueuePrefix: this.prefix,
      correlationTimeoutMs: this.correlationTimeoutMs,
    };
  }

  async attach(request: unknown): Promise<OperationHandle> {
    const r = parse(attachRequest, request);
    const naming = namingOf(r);
    return this.start('attach', { ...this.context(r), ...naming }, r.sourceVmName);
  }
  /**
   * Create a CloudStack volume with its persistent name. Its workflow id is `create:<operation
   * id>` (the volume id is CloudStack's to give); the result carries `volumeId`.
   */
  async create(request: unknown): Promise<OperationHandle> {
    const r = parse(createRequest, request);
    const ctx = this.context({ ...r, volumeId: '' });
    return this.start(
      'create',
      {
        ...ctx,
        name: r.name,
        sizeGb: Math.ceil(r.sizeBytes / GIB),
        diskOfferingId: r.diskOfferingId,
        zoneId: r.zoneId,
        ...namingOf(r),
      },
      r.sourceVmName,
    );
  }
  async detach(request: unknown): Promise<OperationHandle> {
    return this.start('detach', this.context(parse(detachRequest, request)));
  }
  async failover(request: unknown): Promise<OperationHandle> {
    const r = parse(failoverRequest, request);
    return this.start('failover', {
      ...this.context(r),
      targetVmId: r.targetVmId,
      ...(r.asRoot ? { asRoot: true } : {}),
    });
  }
  async failback(request: unknown): Promise<OperationHandle> {
    return this.start('failback', this.context(parse(failbackRequest, request)));
  }
  async delete(request: unknown): Promise<OperationHandle> {
    return this.start('delete', this.context(parse(deleteRequest, request)));
  }

  /**
   * Fail a whole VM over (its OS disk as root: `asRoot`) or back: every volume at once, each its
   * own saga under its volume's workflow id. `abort()` cancels it: each volume still in flight
   * compensates. The result lists every volume's result.
   */
  async vm(request: unknown) {
    const r = parse(vmOperationRequest, request);
    const operationId = r.operationId ?? randomUUID();
    const input: VmOperationInput = {
      operationId,
      type: r.type,
      applianceVmId: r.applianceVmId,
      targetVmId: r.targetVmId,
      volumes: r.volumes,
      taskQueuePrefix: this.prefix,
      correlationTimeoutMs: this.correlationTimeoutMs,
    };
    const handle = await this.opts.client.workflow.start(VM_WORKFLOW, {
      workflowId: vmWorkflowId(operationId),
      taskQueue: controlQueue(this.prefix),
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: new TypedSearchAttributes([
        { key: SA.OperationId, value: operationId },
        { key: SA.OperationType, value: 'vm' },
      ]),
      staticSummary: `${r.type} a whole VM: ${r.volumes.length} volumes, migrated VM ${r.targetVmId}`,
    });
    return {
      operationId,
      workflowId: handle.workflowId,
      result: () => handle.result() as Promise<Awaited<ReturnType<typeof workflows.vmOperation>>>,
      progress: () => handle.query(vmProgressQuery),
      abort: () => handle.cancel(),
    };
  }

  /** Handle of the latest operation on a volume (running or finished). */
  async latest(volume: string): Promise<OperationHandle | undefined> {
    const { volumeId } = parse(volumeRef, { volumeId: volume });
    const handle = this.opts.client.workflow.getHandle(volumeWorkflowId(volumeId));
    try {
      const d = await handle.describe();
      const memo = (d.memo ?? {}) as { operationId?: string; type?: OperationType };
      return this.wrap(handle, d.runId, memo.operationId ?? '', memo.type ?? 'attach', volumeId, true);
    } catch (err) {
      if ((err as Error).name === 'WorkflowNotFoundError') return undefined;
      throw err;
    }
  }

  /**
   * Abort a running operation (its completed steps are compensated), or answer a stuck one.
   * `ref` is the operation's volume id or its own id: a create (whose volume may not exist yet)
   * and a whole-VM operation are reached by their operation id as well as any volume operation.
   */
  async operator(ref: string, action: OperatorAction): Promise<string> {
    const { volumeId: id } = parse(volumeRef, { volumeId: ref });
    const a = parse(operatorActionSchema, action);
    return (await this.running(id)).executeUpdate(operatorUpdate, { args: [a] });
  }

  /** The running workflow of an operation named by volume id or operation id. */
  private async running(id: string): Promise<WorkflowHandle> {
    const wf = this.opts.client.workflow;
    for (const workflowId of [volumeWorkflowId(id), createWorkflowId(id), vmWorkflowId(id)]) {
      const h = wf.getHandle(workflowId);
      const d = await h.describe().catch(() => undefined);
      if (d?.status.name === 'RUNNING') return wf.getHandle(workflowId, d.runId);
    }
    // A create that has its volume id by now, or a volume operation named by its operation id.
    const query = `(VolumeId = "${id}" OR OperationId = "${id}") AND ExecutionStatus = "Running"`;
    for await (const w of wf.list({ query })) return wf.getHandle(w.workflowId, w.runId);
    throw new InvalidRequestError([
      { field: 'volumeId', message: `no running operation has the volume id or operation id ${id}` },
    ]);
  }

  private async start<I extends WorkflowContext>(
    type: Exclude<OperationType, 'repair'>,
    input: I & { idempotent?: boolean },
    vmName?: string,
  ): Promise<OperationHandle> {
    const workflowId =
      type === 'create' ? createWorkflowId(input.operationId) : volumeWorkflowId(input.volumeId);
    // A retried request (same idempotency key) whose operation already finished gets that
    // operation back instead of starting a second one.
    if (input.idempotent && type !== 'create') {
      const handle = this.opts.client.workflow.getHandle(volumeWorkflowId(input.volumeId));
      const d = await handle.describe().catch((err: Error) => {
        if (err.name === 'WorkflowNotFoundError') return undefined;
        throw err;
      });
      const memo = (d?.memo ?? {}) as { operationId?: string; type?: OperationType };
      if (d && memo.operationId === input.operationId) {
        const differ = mismatches(d.memo, type, input);
        if (differ.length) throw new IdempotencyMismatchError(input.operationId, differ);
        return this.wrap(handle, d.runId, input.operationId, memo.type ?? type, input.volumeId, true);
      }
    }
    delete input.idempotent;
    for (let attempt = 0; ; attempt++) {
      const started = await this.tryStart(type, workflowId, input, vmName);
      if (started.handle) return started.handle;
      // The running saga has finished (its audit row may already say so to a poller): only its
      // close is outstanding. Wait for it, briefly, rather than call the volume busy.
      if (attempt === 0 && (await this.closing(started.running))) continue;
      throw started.busy;
    }
  }

  /** Whether a run has ended its saga and is closing (its last audit write, its completion). */
  private async closing(running: WorkflowHandle): Promise<boolean> {
    const p = await running.query(progressQuery).catch(() => undefined);
    if (!p || (p.state !== 'completed' && p.state !== 'failed')) return false;
    await Promise.race([running.result().catch(() => undefined), new Promise((r) => setTimeout(r, 30_000))]);
    return true;
  }

  private async tryStart<I extends WorkflowContext>(
    type: Exclude<OperationType, 'repair'>,
    workflowId: string,
    input: I,
    vmName: string | undefined,
  ): Promise<
    | { handle: OperationHandle; running?: never; busy?: never }
    | { handle?: never; running: WorkflowHandle; busy: VolumeBusyError }
  > {
    const pairs = [
      ...(input.volumeId ? [{ key: SA.VolumeId, value: input.volumeId }] : []),
      { key: SA.OperationId, value: input.operationId },
      { key: SA.ApplianceVmId, value: input.applianceVmId },
      { key: SA.OperationType, value: type as string },
      { key: SA.SagaStep, value: 'queued' },
    ];
    if (vmName) pairs.push({ key: SA.VmName, value: vmName });
    try {
      const handle = await this.opts.client.workflow.start(WORKFLOW_TYPE[type], {
        workflowId,
        taskQueue: controlQueue(this.prefix),
        args: [input],
        workflowIdConflictPolicy: 'FAIL',
        // A create's id is its idempotency key: once it ran, the same key gets that run back.
        workflowIdReusePolicy: type === 'create' ? 'REJECT_DUPLICATE' : 'ALLOW_DUPLICATE',
        memo: { operationId: input.operationId, type, request: requestPrint(type, input) },
        typedSearchAttributes: new TypedSearchAttributes(pairs),
        staticSummary: summaryOf(type, input),
      });
      return {
        handle: this.wrap(handle, handle.firstExecutionRunId, input.operationId, type, input.volumeId, false),
      };
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    // Running already: the same idempotency key means "that is my operation".
    const running = this.opts.client.workflow.getHandle(workflowId);
    const d = await running.describe();
    const memo = (d.memo ?? {}) as { operationId?: string; type?: string };
    if (memo.operationId === input.operationId) {
      const differ = mismatches(d.memo, type, input);
      if (differ.length) throw new IdempotencyMismatchError(input.operationId, differ);
      return { handle: this.wrap(running, d.runId, input.operationId, type, input.volumeId, true) };
    }
    return {
      running: this.opts.client.workflow.getHandle(workflowId, d.runId),
      busy: new VolumeBusyError(input.volumeId, {
        operationId: memo.operationId,
        type: memo.type,
        workflowId,
        runId: d.runId,
      }),
    };
  }

  private wrap(
    handle: WorkflowHandle,
    runId: string,
    operationId: string,
    type: OperationType,
    volumeId: string,
    deduplicated: boolean,
  ): OperationHandle {
    const pinned = this.opts.client.workflow.getHandle(handle.workflowId, runId);
    return {
      operationId,
      type,
      volumeId,
      workflowId: handle.workflowId,
      runId,
      deduplicated,
      result: () => pinned.result() as Promise<OperationResult>,
      progress: () => pinned.query(progressQuery),
    };
  }
}
