import { z } from 'zod';

/**
 * Fault injection: make the next `count` calls of a command misbehave.
 * - `error`: the HTTP call fails with `errorcode` (CloudStack's error envelope);
 * - `job-error`: the async job fails (jobstatus 2) with `errorcode`;
 * - `timeout`: no reply at all (the client's timeout fires);
 * - `lost-reply`: CloudStack acts, then the connection drops before the reply — the case a
 *   retry must survive without acting twice or failing.
 */
export const faultSchema = z.object({
  command: z.string().min(1),
  kind: z.enum(['error', 'job-error', 'timeout', 'lost-reply']),
  count: z.number().int().min(1).default(1),
  errorcode: z.number().int().min(400).max(599).default(530),
  errortext: z.string().default('Injected fault'),
});
export type Fault = z.output<typeof faultSchema>;
export type FaultInput = z.input<typeof faultSchema>;

export class FaultInjector {
  private faults: Fault[] = [];
  inject(f: FaultInput): void {
    this.faults.push(faultSchema.parse(f));
  }
  clear(): void {
    this.faults = [];
  }
  pending(): Fault[] {
    return this.faults.map((f) => ({ ...f }));
  }
  /** Consume one fault for this command (names compared case-insensitively), if any. */
  take(command: string): Fault | undefined {
    const f = this.faults.find((x) => x.command.toLowerCase() === command.toLowerCase() && x.count > 0);
    if (!f) return undefined;
    f.count -= 1;
    if (f.count === 0) this.faults = this.faults.filter((x) => x !== f);
    return { ...f };
  }
}
