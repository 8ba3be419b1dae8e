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
