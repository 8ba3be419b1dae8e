/**
 * Host side of the QEMU guest agent (qemu-ga) protocol, and a CommandRunner that executes argv
 * arrays inside the lab guest with guest-exec. qemu-ga answers strictly in order and has no
 * request ids, so requests are serialized; after a timeout the stream is resynchronized with
 * guest-sync-delimited (a fresh random id, preceded by a 0xFF byte that resets the agent's parser).
 */
import { randomInt } from 'node:crypto';
import type { CommandResult, CommandRunner } from '../../src/command/runner.js';
import { JsonLineSocket, type JsonObject } from './jsonsock.js';
import { GUEST_PATH } from './initramfs.js';

export class QgaError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`qemu-ga ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QgaError';
  }
}

export interface GuestExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

export interface GuestExecRequest {
  path: string;
  arg?: readonly string[];
  /** Full environment of the child ("K=V"); qemu-ga's own environment when omitted. */
  env?: readonly string[];
  input?: string | Buffer;
  captureOutput?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class QgaClient {
  private sock!: JsonLineSocket;
  private waiter: ((m: JsonObject) => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private needsSync = true;

  private constructor(private readonly socketPath: string) {}

  /** Connect and synchronize; retries until the agent in the guest answers or timeoutMs passes. */
  static async connect(
    socketPath: string,
    opts: { timeoutMs?: number; isAlive?: () => boolean } = {},
  ): Promise<QgaClient> {
    const c = new QgaClient(socketPath);
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    c.sock = await JsonLineSocket.connect(socketPath, (m) => c.waiter?.(m), opts);
    c.sock.onClose(() => c.waiter?.({ __closed: true }));
    for (;;) {
      if (opts.isAlive && !opts.isAlive()) throw new Error('VM exited before the guest agent answered');
      try {
        await c.sync(2_000);
        return c;
      } catch (e) {
        if (c.sock.closed) throw e;
        if (Date.now() > deadline)
          throw new Error(`guest agent did not answer: ${(e as Error).message}`, { cause: e });
      }
    }
  }

  /** Next message from the agent, or timeout. Only one waiter at a time (requests are serialized). */
  private nextMessage(timeoutMs: number, accept: (m: JsonObject) => boolean): Promise<JsonObject> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no answer from qemu-ga within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (m) => {
        if ('__closed' in m) {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(new Error(`qemu-ga socket ${this.socketPath} closed`));
          return;
        }
        if (!accept(m)) return;
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(m);
      };
    });
  }

  private async sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    const answer = this.nextMessage(timeoutMs, (m) => m.return === id);
    this.sock.send({ execute: 'guest-sync-delimited', arguments: { id } }, Buffer.from([0xff]));
    await answer;
    this.needsSync = false;
  }

  /** One command, serialized behind any in flight. */
  request<T = unknown>(command: string, args?: JsonObject, timeoutMs = 30_000): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.sock.closed) throw new Error(`qemu-ga socket closed: ${this.sock.closed.message}`);
      if (this.needsSync) await this.sync(Math.min(timeoutMs, 10_000));
      const answer = this.nextMessage(timeoutMs, (m) => 'return' in m || 'error' in m);
      this.sock.send(args ? { execute: command, arguments: args } : { execute: command });
      let m: JsonObject;
      try {
        m = await answer;
      } catch (e) {
        this.needsSync = true; // a late answer must not be taken for the next request's
        throw e;
      }
      if ('error' in m) {
        const err = (m.error ?? {}) as { class?: string; desc?: string };
        throw new QgaError(command, err.class ?? 'GenericError', err.desc ?? 'unknown error');
      }
      return m.return as T;
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => {});
    return p;
  }

  async exec(req: GuestExecRequest): Promise<number> {
    const args: JsonObject = {
      path: req.path,
      arg: [...(req.arg ?? [])],
      'capture-output': !!req.captureOutput,
    };
    if (req.env) args.env = [...req.env];
    if (req.input !== undefined) args['input-data'] = Buffer.from(req.input).toString('base64');
    const r = await this.request<{ pid: number }>('guest-exec', args);
    return r.pid;
  }

  execStatus(pid: number): Promise<GuestExecStatus> {
    return this.request<GuestExecStatus>('guest-exec-status', { pid });
  }

  close(): void {
    this.sock?.close();
  }
}

export interface QgaRunnerOptions {
  /** Extra environment for every command (on top of PATH, LC_ALL=C, HOME=/root). */
  env?: Record<string, string>;
  defaultTimeoutMs?: number;
}

export function guestEnv(extra: Record<string, string> = {}): string[] {
  const env: Record<string, string> = { PATH: GUEST_PATH, LC_ALL: 'C', HOME: '/root', ...extra };
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/** Runs argv arrays inside the lab guest. Same contract as `localRunner`. */
export class QgaRunner implements CommandRunner {
  constructor(
    private readonly qga: QgaClient,
    private readonly opts: QgaRunnerOptions = {},
  ) {}

  async run(
    file: string,
    args: readonly string[],
    opts: { input?: string; timeoutMs?: number } = {},
  ): Promise<CommandResult> {
    const timeoutMs = opts.timeoutMs ?? this.opts.defaultTimeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let pid: number;
    try {
      pid = await this.qga.exec({
        path: file,
        arg: args,
        env: guestEnv(this.opts.env),
        // Always give stdin: without input-data the child would inherit the agent's stdin.
        input: opts.input ?? '',
        captureOutput: true,
      });
    } catch (e) {
      if (e instanceof QgaError) throw new Error(`${file} could not run: ${e.desc}`, { cause: e });
      throw e;
    }
    let delay = 5;
    for (;;) {
      const st = await this.qga.execStatus(pid);
      if (st.exited) {
        const decode = (b?: string) => (b ? Buffer.from(b, 'base64').toString('utf8') : '');
        return {
          stdout: decode(st['out-data']),
          stderr: decode(st['err-data']),
          exitCode: st.exitcode ?? (st.signal !== undefined ? 128 + st.signal : -1),
        };
      }
      if (Date.now() > deadline) {
        // Best effort: do not leave it running in the guest, then report the timeout.
        await this.qga
          .exec({ path: 'kill', arg: ['-KILL', String(pid)], env: guestEnv() })
          .then((kpid) => this.qga.execStatus(kpid))
          .catch(() => {});
        await this.qga.execStatus(pid).catch(() => {}); // reap
        throw new Error(`${file} could not run: timed out after ${timeoutMs} ms in the guest`);
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
  }
}
