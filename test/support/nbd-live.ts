import { execaSync, execa, type ResultPromise } from 'execa';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Drives test/support/nbd-live.py: a replication job's NBD connection through libnbd
 * (python3-libnbd), run on this machine against the lab guest's forwarded NBD port, as a
 * replication job reaches an appliance from outside.
 */
const SCRIPT = fileURLToPath(new URL('./nbd-live.py', import.meta.url));

/** A python3 that has Debian's libnbd binding (a pyenv python3 on PATH may not). */
function python(): string {
  for (const p of ['python3', '/usr/bin/python3']) {
    if (execaSync(p, ['-c', 'import nbd'], { reject: false }).exitCode === 0) return p;
  }
  throw new Error('no python3 with the libnbd binding: apt-get install python3-libnbd');
}

interface Line {
  kind: string;
  [k: string]: unknown;
}

const running = new Set<LiveProcess>();

/** Kill every nbd-live process still running (a test's `after`, so a failed test leaves none). */
export async function killLiveClients(): Promise<void> {
  for (const p of running) p.proc.kill('SIGKILL');
  await Promise.all([...running].map((p) => p.proc));
}

class LiveProcess {
  readonly lines: Line[] = [];
  private waiters: { match: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  readonly proc: ResultPromise;
  private stderr = '';

  constructor(args: string[]) {
    this.proc = execa(python(), [SCRIPT, ...args], { reject: false, stdin: 'pipe' });
    running.add(this);
    void this.proc.then(() => running.delete(this));
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.proc.stdout! }).on('line', (text) => {
      const l = JSON.parse(text) as Line;
      this.lines.push(l);
      this.waiters = this.waiters.filter((w) => (w.match(l) ? (w.resolve(l), false) : true));
    });
  }

  next(match: (l: Line) => boolean, timeoutMs = 60_000): Promise<Line> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nbd-live: no expected line within ${timeoutMs} ms; stderr: ${this.stderr}`)),
        timeoutMs,
      );
      this.waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      void this.proc.then((r) => reject(new Error(`nbd-live exited (${r.exitCode}): ${this.stderr}`)));
    });
  }

  send(text: string): void {
    this.proc.stdin!.write(text + '\n');
  }
}

export interface StreamTick {
  t: number;
  ops: number;
  bytes: number;
  errors: number;
  maxLatMs: number;
}
export interface StreamSummary {
  connects: number;
  startedMs: number;
  endedMs: number;
  ops: number;
  bytes: number;
  errors: number;
  mismatches: number;
  maxLatMs: number;
  blocksVerified: number;
  blocksBad: number;
  firstErrors: { t: number; error: string }[];
}

/** A replication stream: one connection writing and reading back verifiable blocks, nonstop. */
export class NbdStream {
  private readonly p: LiveProcess;
  /** `opsPerSecond`: a cap on write+read pairs a second (0: as fast as it goes). */
  constructor(uri: string, opts: { blockSize?: number; blocks?: number; opsPerSecond?: number } = {}) {
    this.p = new LiveProcess([
      'stream',
      uri,
      String(opts.blockSize ?? 65536),
      String(opts.blocks ?? 512),
      String(opts.opsPerSecond ?? 0),
    ]);
  }
  /** Resolves once the stream has moved data (its first tick). */
  async started(): Promise<void> {
    await this.p.next((l) => l.kind === 'tick' && (l.ops as number) > 0);
  }
  ticks(): StreamTick[] {
    return this.p.lines.filter((l) => l.kind === 'tick') as unknown as StreamTick[];
  }
  async stop(): Promise<StreamSummary> {
    this.p.send('stop');
    return (await this.p.next((l) => l.kind === 'summary', 300_000)) as unknown as StreamSummary;
  }
}

export interface WatchSample {
  t: number;
  listed: boolean;
  opened: boolean;
  io: string | null;
  error: string | null;
  ms: number;
}

/** Every `intervalMs` a fresh connection lists the exports and opens `exportName`. */
export class ExportWatcher {
  private readonly p: LiveProcess;
  constructor(baseUri: string, exportName: string, intervalMs = 100) {
    this.p = new LiveProcess(['watch', baseUri, exportName, String(intervalMs)]);
  }
  async started(): Promise<void> {
    await this.p.next((l) => l.kind === 'sample');
  }
  samples(): WatchSample[] {
    return this.p.lines.filter((l) => l.kind === 'sample') as unknown as WatchSample[];
  }
  async stop(): Promise<WatchSample[]> {
    this.p.send('stop');
    await this.p.proc;
    return this.samples();
  }
}

export interface HoldReply {
  ok: boolean;
  error?: string;
  bytes?: number[];
}

/** One connection held open; each call is one NBD command on it. */
export class HeldConnection {
  private readonly p: LiveProcess;
  private seq = 0;
  constructor(uri: string) {
    this.p = new LiveProcess(['hold', uri]);
  }
  async ready(): Promise<void> {
    await this.p.next((l) => l.kind === 'ready');
  }
  private async call(cmd: Record<string, unknown>): Promise<HoldReply> {
    const id = ++this.seq;
    this.p.send(JSON.stringify({ ...cmd, id }));
    return (await this.p.next((l) => l.kind === 'reply' && l.id === id)) as unknown as HoldReply;
  }
  write(off: number, len: number, byte: number) {
    return this.call({ op: 'write', off, len, byte });
  }
  read(off: number, len: number) {
    return this.call({ op: 'read', off, len });
  }
  flush() {
    return this.call({ op: 'flush' });
  }
  async close(): Promise<void> {
    await this.call({ op: 'close' });
    await this.p.proc;
  }
}
