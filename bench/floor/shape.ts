import type { temporal } from '@temporalio/proto';
import type { Shape, ShapeItem } from './workflows.js';

type Event = temporal.api.history.v1.IHistoryEvent;

/** What one history costs a Temporal cluster (and what Temporal Cloud bills as actions). */
export interface ActionCount {
  remoteActivities: number;
  localActivities: number;
  workflowTasks: number;
  upserts: number;
  events: number;
}

export function countActions(events: Event[]): ActionCount {
  const n = (f: (e: Event) => unknown) => events.filter(f).length;
  return {
    remoteActivities: n((e) => e.activityTaskScheduledEventAttributes),
    localActivities: n((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity'),
    workflowTasks: n((e) => e.workflowTaskCompletedEventAttributes),
    upserts: n((e) => e.upsertWorkflowSearchAttributesEventAttributes),
    events: events.length,
  };
}

/**
 * The shape of a saga's history: per workflow task, its commands in order (remote activity on
 * which kind of queue, local activity, upsert). Commands follow their WorkflowTaskCompleted event.
 */
export function shapeOf(events: Event[], queues: { controlQueue: string; hostQueue: string }): Shape {
  const tasks: ShapeItem[][] = [];
  let current: ShapeItem[] | undefined;
  let upserts = 0;
  for (const e of events) {
    if (e.workflowTaskCompletedEventAttributes) tasks.push((current = []));
    else if (!current) continue;
    else if (e.activityTaskScheduledEventAttributes)
      current.push({
        remote: (e.activityTaskScheduledEventAttributes.taskQueue?.name ?? '').includes('-host-')
          ? 'host'
          : 'control',
      });
    else if (e.markerRecordedEventAttributes?.markerName === 'core_local_activity')
      current.push({ local: true });
    else if (e.upsertWorkflowSearchAttributesEventAttributes) current.push({ upsert: ++upserts });
  }
  return { tasks: tasks.filter((t) => t.length > 0), ...queues };
}

/** One workflow task of a history: how long it waited before it (activities, or the start) and ran. */
export interface TaskTime {
  /** From the previous task's completion (or the first event) to this task's scheduling. */
  before: number;
  /** Scheduled → started: the task waited in its queue. */
  queued: number;
  /** Started → completed: the workflow code and the local activities it ran. */
  ran: number;
}

/** An event time in milliseconds. */
export const millis = (ts: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
  Number(String(ts?.seconds ?? 0)) * 1000 + (ts?.nanos ?? 0) / 1e6;

/** Each workflow task's times, in order, from a history's event timestamps. */
export function taskTimeline(events: Event[]): TaskTime[] {
  const out: TaskTime[] = [];
  let last = events.length ? millis(events[0]!.eventTime) : 0;
  let scheduled = 0;
  let started = 0;
  for (const e of events) {
    const t = millis(e.eventTime);
    if (e.workflowTaskScheduledEventAttributes) scheduled = t;
    else if (e.workflowTaskStartedEventAttributes) started = t;
    else if (e.workflowTaskCompletedEventAttributes) {
      out.push({ before: scheduled - last, queued: started - scheduled, ran: t - started });
      last = t;
    }
  }
  return out;
}
