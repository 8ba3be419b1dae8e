import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import type { CommandRunner } from '../command/runner.js';
import { z } from 'zod';

/**
 * Failpoints, in the spirit of etcd's gofail and TiKV's fail-rs: a worker started with a
 * failpoints directory consults it before every activity, so the reliability suite can make any
 * step of any saga fail, stall or crash on the real stack without the workflows knowing.
 * Off unless FAILPOINTS_DIR is set; never set it in production.
 *
 * A plan is a file `<dir>/<id>.json` ({@link Failpoint}). It fires at most once: the first
 * matching activity claims it by creating `<dir>/<id>.fired` exclusively (worker processes on
 * the appliance and the control host share the directory).
 *  - fail-before: fail for good without acting;
 *  - fail-after:  act, then fail for good ("done, but the reply was lost" — the hardest undo);
 *  - hold:        create `<id>.held`, wait (heartbeating) until `<id>.release` appears, then act;
 *                 a cancellation delivered meanwhile ends it without acting;
 *  - crash-after: act, then SIGKILL this worker process before reporting.
 */
export const failpointSchema = z.object({
  id: z.string().regex(/^[a-z0-9-]{1,64}$/),
  workflowId: z.string().min(1),
  activityType: z.string().min(1),
  action: z.enum(['fail-before', 'fail-after', 'hold', 'crash-after']),
});
export type Failpoint = z.infer<typeof failpointSchema>;

export const INJECTED_FAULT = 'InjectedFault';

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

async function claim(dir: string, fp: Failpoint): Promise<boolean> {
  try {
    await (await open(path.join(dir, `${fp.id}.fired`), 'wx')).close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

async function matching(dir: string, ctx: Context): Promise<Failpoint | undefined> {
  const { activityType, workflowExecution } = ctx.info;
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!f.endsWith('.json')) continue;
    const fp = failpointSchema.safeParse(
      JSON.parse(await readFile(path.join(dir, f), 'utf8').catch(() => 'null')),
    );
    if (!fp.success) continue;
    if (fp.data.activityType !== activityType || fp.data.workflowId !== workflowExecution?.workflowId)
      continue;
    if (await claim(dir, fp.data)) return fp.data;
  }
  return undefined;
}

async function hold(dir: string, fp: Failpoint, ctx: Context): Promise<void> {
  await writeFile(path.join(dir, `${fp.id}.held`), String(process.pid));
  while (!(await exists(path.join(dir, `${fp.id}.release`)))) {
    ctx.heartbeat();
    if (ctx.cancellationSignal.aborted)
      throw new CancelledFailure(`failpoint ${fp.id}: cancelled while held`);
    await ctx.sleep(100).catch(() => undefined);
  }
}

export function failpointInterceptor(dir: string): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const fp = await matching(dir, ctx);
        if (!fp) return next(input);
        const fail = (when: string) =>
          ApplicationFailure.nonRetryable(
            `failpoint ${fp.id}: ${ctx.info.activityType} failed ${when}`,
            INJECTED_FAULT,
          );
        switch (fp.action) {
          case 'fail-before':
            throw fail('before acting');
          case 'fail-after':
            await next(input);
            throw fail('after acting');
          case 'hold':
            await hold(dir, fp, ctx);
            return next(input);
          case 'crash-after':
            await next(input);
            process.kill(process.pid, 'SIGKILL');
            return new Promise(() => undefined);
        }
      },
    },
  });
}

/**
 * The test side: arm failpoints in a worker's directory, through a command runner so the same
 * code reaches a directory on this machine or inside the appliance (the lab guest).
 */
export class Failpoints {
  constructor(
    readonly dir: string,
    private readonly runner: CommandRunner,
  ) {}

  private async write(file: string, content: string): Promise<void> {
    const r = await this.runner.run('tee', [path.join(this.dir, file)], { input: content });
    if (r.exitCode !== 0) throw new Error(`failpoints: cannot write ${file} in ${this.dir}: ${r.stderr}`);
  }
  async init(): Promise<void> {
    await this.runner.run('mkdir', ['-p', this.dir]);
  }
  arm(fp: Failpoint): Promise<void> {
    return this.write(`${fp.id}.json`, JSON.stringify(failpointSchema.parse(fp)));
  }
  async fired(id: string): Promise<boolean> {
    return (await this.runner.run('test', ['-e', path.join(this.dir, `${id}.fired`)])).exitCode === 0;
  }
  /** A `hold` failpoint has caught its activity (which now waits for `release`). */
  async held(id: string): Promise<boolean> {
    return (await this.runner.run('test', ['-e', path.join(this.dir, `${id}.held`)])).exitCode === 0;
  }
  release(id: string): Promise<void> {
    return this.write(`${id}.release`, '');
  }
}
