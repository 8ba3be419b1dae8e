// Shared by the cloudstack-*.test.ts files: raw signed requests (to see exactly what the
// simulator answers, bypassing our client's checks) and a hypervisor backend the test holds.
import { sign, signedQuery } from '../../src/cloudstack/signing.js';
import type {
  HypervisorAttach,
  HypervisorBackend,
  HypervisorDetach,
} from '../../harness/cloudstack-sim/hypervisor.js';

export interface RawReply {
  status: number;
  headers: Headers;
  text: string;
  body: Record<string, Record<string, unknown>>;
}

/** One request signed with `secret` (our signer, verified against the published vectors). */
export async function raw(
  url: string,
  params: Record<string, string>,
  secret: string,
  method: 'GET' | 'POST' = 'GET',
): Promise<RawReply> {
  const res =
    method === 'GET'
      ? await fetch(`${url}?${signedQuery(params, secret)}`)
      : await fetch(url, {
          method: 'POST',
          body: new URLSearchParams({ ...params, signature: sign(params, secret) }),
        });
  const text = await res.text();
  let body: RawReply['body'] = {};
  try {
    body = JSON.parse(text) as RawReply['body'];
  } catch {
    // XML or garbage: callers look at `text`.
  }
  return { status: res.status, headers: res.headers, text, body };
}

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * A backend whose attach/detach wait until the test opens the gate, so a job is observably
 * in progress (jobstatus 0, volume Creating/Attaching) without sleeping. `entered` resolves
 * when the simulator's job reaches the hypervisor; `fail` makes the next call throw.
 */
export class GatedHypervisor implements HypervisorBackend {
  gate = deferred();
  entered = deferred<HypervisorAttach | HypervisorDetach>();
  readonly calls: { op: 'attach' | 'detach'; volumeId: string }[] = [];
  fail: string | undefined;
  open = true;

  hold(): void {
    this.open = false;
    this.gate = deferred();
    this.entered = deferred();
  }
  release(): void {
    this.open = true;
    this.gate.resolve();
  }
  async attach(a: HypervisorAttach): Promise<void> {
    await this.step('attach', a);
  }
  async detach(a: HypervisorDetach): Promise<void> {
    await this.step('detach', a);
  }
  private async step(op: 'attach' | 'detach', a: HypervisorAttach | HypervisorDetach): Promise<void> {
    this.calls.push({ op, volumeId: a.volumeId });
    this.entered.resolve(a);
    if (!this.open) await this.gate.promise;
    if (this.fail) {
      const f = this.fail;
      this.fail = undefined;
      throw new Error(f);
    }
  }
}
