/**
 * Newline-delimited JSON over a unix socket, as QMP and the QEMU guest agent speak it.
 * QGA may prefix a response with a 0xFF sentinel (guest-sync-delimited); those bytes are dropped.
 */
import net from 'node:net';
import { existsSync } from 'node:fs';

export type JsonObject = Record<string, unknown>;

export class JsonLineSocket {
  private buf = Buffer.alloc(0);
  private closedErr: Error | undefined;
  private readonly closeHandlers = new Set<(err: Error) => void>();

  private constructor(
    private readonly sock: net.Socket,
    private readonly onMessage: (msg: JsonObject) => void,
  ) {
    sock.on('data', (chunk: Buffer) => this.feed(chunk));
    const closed = (err?: Error) => {
      if (this.closedErr) return;
      this.closedErr = err ?? new Error('socket closed');
      for (const h of this.closeHandlers) h(this.closedErr);
    };
    sock.on('error', (e) => closed(e));
    sock.on('close', () => closed());
  }

  /** Connects, retrying while the socket file does not exist yet or refuses (QEMU still starting). */
  static async connect(
    socketPath: string,
    onMessage: (msg: JsonObject) => void,
    opts: { timeoutMs?: number; isAlive?: () => boolean } = {},
  ): Promise<JsonLineSocket> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let lastErr: unknown;
    for (;;) {
      if (opts.isAlive && !opts.isAlive()) throw new Error(`process gone while connecting to ${socketPath}`);
      if (existsSync(socketPath)) {
        try {
          const sock = await new Promise<net.Socket>((resolve, reject) => {
            const s = net.createConnection(socketPath);
            s.once('connect', () => {
              s.removeListener('error', reject);
              resolve(s);
            });
            s.once('error', reject);
          });
          return new JsonLineSocket(sock, onMessage);
        } catch (e) {
          lastErr = e;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`could not connect to ${socketPath}: ${String(lastErr ?? 'socket never appeared')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private feed(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) break;
      let line = this.buf.subarray(0, nl);
      this.buf = this.buf.subarray(nl + 1);
      // Drop QGA's 0xFF sentinels wherever they are (they are never valid inside JSON text).
      if (line.includes(0xff)) line = Buffer.from(line.filter((b) => b !== 0xff));
      const text = line.toString('utf8').trim();
      if (!text) continue;
      let msg: unknown;
      try {
        msg = JSON.parse(text);
      } catch {
        continue; // garbage after a resync; the protocol recovers through sync ids
      }
      if (msg && typeof msg === 'object' && !Array.isArray(msg)) this.onMessage(msg as JsonObject);
    }
  }

  get closed(): Error | undefined {
    return this.closedErr;
  }

  onClose(h: (err: Error) => void): () => void {
    this.closeHandlers.add(h);
    return () => this.closeHandlers.delete(h);
  }

  send(obj: JsonObject, prefix?: Buffer): void {
    if (this.closedErr) throw this.closedErr;
    const body = Buffer.from(JSON.stringify(obj) + '\n');
    this.sock.write(prefix ? Buffer.concat([prefix, body]) : body);
  }

  close(): void {
    this.sock.destroy();
  }
}
