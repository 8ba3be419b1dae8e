import { proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import { SA } from '../../src/temporal/search-attributes.js';

/**
 * The engine's floor for a saga of a given shape: the same remote activities (on the same kinds
 * of queue), local activities and search-attribute upserts, in the same order and workflow tasks,
 * each doing nothing. What a saga costs above this is our code and the steps' real work.
 */
export type ShapeItem = { remote: 'control' | 'host' } | { local: true } | { upsert: number };
export interface Shape {
  /** One entry per workflow task: what the saga did in it, in order. */
  tasks: ShapeItem[][];
  controlQueue: string;
  hostQueue: string;
}

interface Noop {
  noop(): Promise<void>;
}

export async function floorWorkflow(shape: Shape): Promise<void> {
  const control = proxyActivities<Noop>({ taskQueue: shape.controlQueue, startToCloseTimeout: '1 minute' });
  const host = proxyActivities<Noop>({ taskQueue: shape.hostQueue, startToCloseTimeout: '1 minute' });
  const local = proxyLocalActivities<Noop>({ startToCloseTimeout: '10 seconds' });
  for (const task of shape.tasks) {
    // Remote activities scheduled in one workflow task ran concurrently (a workflow cannot wait
    // for one inside a task); they are awaited together at the task's end. Local activities run
    // one after another, in order (the saga's may have overlapped: the floor errs high there).
    const remote: Promise<void>[] = [];
    for (const item of task) {
      if ('upsert' in item) upsertSearchAttributes([{ key: SA.SagaStep, value: `floor-${item.upsert}` }]);
      else if ('local' in item) await local.noop();
      else remote.push((item.remote === 'host' ? host : control).noop());
    }
    await Promise.all(remote);
  }
}
