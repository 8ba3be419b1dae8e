/**
 * A small QMP client: capabilities negotiation, commands correlated by id, and events
 * (DEVICE_DELETED and friends) delivered to subscribers.
 */
import { JsonLineSocket, type JsonObject } from './jsonsock.js';

export interface QmpEvent {
  event: string;
  data: JsonObject;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class QmpClient {
  private sock!: JsonLineSocket;
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  private greeting: ((g: JsonObject) => void) | undefined;

  private constructor() {}

  static async connect(
    socketPath: string,
    opts: { timeoutMs?: number; isAlive?: () => boolean } = {},
  ): Promise<QmpClient> {
    const c = new QmpClient();
    const greeted = new Promise<JsonObject>((resolve) => (c.greeting = resolve));
    c.sock = await JsonLineSocket.connect(socketPath, (m) => c.onMessage(m), opts);
    c.sock.onClose((err) => {
      for (const [id, p] of c.pending) {
        clearTimeout(p.timer);
        p.reject(new Error(`QMP connection closed during ${p.command}: ${err.message}`));
        c.pending.delete(id);
      }
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      greeted,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('no QMP greeting')), opts.timeoutMs ?? 10_000);
      }),
    ]).finally(() => clearTimeout(timer));
    await c.execute('qmp_capabilities');
    return c;
  }

  private onMessage(m: JsonObject): void {
    if ('QMP' in m) {
      this.greeting?.(m);
      return;
    }
    if (typeof m.event === 'string') {
      const ev = { event: m.event, data: (m.data ?? {}) as JsonObject, timestamp: m.timestamp } as QmpEvent;
      for (const l of [...this.listeners]) l(ev);
      return;
    }
    const id = typeof m.id === 'string' ? m.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in m) {
      const err = (m.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? 'GenericError', err.desc ?? 'unknown error'));
    } else {
      p.resolve(m.return);
    }
  }

  execute<T = unknown>(command: string, args?: JsonObject, opts: { timeoutMs?: number } = {}): Promise<T> {
    const id = `vl-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command} timed out`));
      }, opts.timeoutMs ?? 30_000);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        this.sock.send(args ? { execute: command, arguments: args, id } : { execute: command, id });
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e as Error);
      }
    });
  }

  /** Subscribe to every event; returns the unsubscribe function. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Start waiting for an event now (before issuing the command that causes it). The returned
   * promise rejects after timeoutMs; `cancel()` stops waiting silently.
   */
  expectEvent(
    name: string,
    match: (data: JsonObject) => boolean,
    timeoutMs: number,
  ): { promise: Promise<QmpEvent>; cancel: () => void } {
    let off = () => {};
    let timer: NodeJS.Timeout | undefined;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      timer = setTimeout(() => {
        off();
        reject(new Error(`no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      off = this.onEvent((e) => {
        if (e.event === name && match(e.data)) {
          off();
          clearTimeout(timer);
          resolve(e);
        }
      });
    });
    promise.catch(() => {}); // a cancelled / unobserved wait must not become an unhandled rejection
    return {
      promise,
      cancel: () => {
        off();
        clearTimeout(timer);
      },
    };
  }

  close(): void {
    this.sock?.close();
  }
}
