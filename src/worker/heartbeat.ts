import type { ActivityInterceptorsFactory } from '@temporalio/worker';

/**
 * Heartbeat every `everyMs` while any activity runs, so the server notices a dead worker within
 * the activity's heartbeatTimeout (seconds) instead of its startToCloseTimeout (a minute or
 * more): a kill -9 of the appliance's worker mid-step is retried on its successor promptly.
 * Only for workers whose activities keep nothing in heartbeat details (the host worker).
 */
export function heartbeatWhileRunning(everyMs: number): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const timer = setInterval(() => ctx.heartbeat(), everyMs);
        try {
          return await next(input);
        } finally {
          clearInterval(timer);
        }
      },
    },
  });
}
