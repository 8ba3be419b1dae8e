import type { Context } from '@temporalio/activity';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';

/** The details each running activity last heartbeat, re-sent by the keep-alive below. */
const lastDetails = new WeakMap<Context, unknown>();

/**
 * Heartbeat with `details` — use this instead of `ctx.heartbeat(details)` on workers with the
 * keep-alive, so its ticks carry the same details (a CloudStack job id to resume from) instead of
 * overwriting them with nothing.
 */
export function heartbeatWith(ctx: Context, details: unknown): void {
  lastDetails.set(ctx, details);
  ctx.heartbeat(details);
}

/**
 * Heartbeat every `everyMs` while any activity runs, so the server notices a dead worker within
 * the activity's heartbeatTimeout (seconds) instead of its startToCloseTimeout (minutes): a
 * kill -9 of a worker mid-step is retried on its successor promptly. (No effect on local
 * activities.)
 */
export function heartbeatWhileRunning(everyMs: number): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const timer = setInterval(() => ctx.heartbeat(lastDetails.get(ctx)), everyMs);
        try {
          return await next(input);
        } finally {
          clearInterval(timer);
        }
      },
    },
  });
}
