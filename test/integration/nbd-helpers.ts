import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { localRunner } from '../../src/command/runner.js';

/** Shared helpers for the NBD integration tests (real servers on 127.0.0.1, temp dirs). */

/** The first of `tools` not found on PATH, or undefined when all are there. */
export async function missingTool(...tools: string[]): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const t of tools) {
    let found = false;
    for (const d of dirs) {
      try {
        await fsp.access(path.join(d, t), fsp.constants.X_OK);
        found = true;
        break;
      } catch {
        // next directory
      }
    }
    if (!found) return t;
  }
  return undefined;
}

/** An ephemeral port the kernel just handed out on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
}

/** Sparse file of `size` bytes whose first 16 bytes are `fill` repeated. */
export async function sparseFile(file: string, size: number, fill: string): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    await fh.truncate(size);
    await fh.write(Buffer.from(fill.repeat(16).slice(0, 16)), 0, 16, 0);
  } finally {
    await fh.close();
  }
}

export async function head16(file: string): Promise<string> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(16);
    await fh.read(buf, 0, 16, 0);
    return buf.toString('latin1');
  } finally {
    await fh.close();
  }
}

/** nbdcopy SRC DST (either may be an nbd:// URI). */
export async function nbdcopy(src: string, dst: string): Promise<void> {
  const r = await localRunner.run('nbdcopy', [src, dst]);
  if (r.exitCode !== 0) throw new Error(`nbdcopy ${src} ${dst}: ${r.stderr}`);
}

export async function pollFor(
  cond: () => Promise<boolean>,
  deadlineMs = 10_000,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A long-lived NBD client: qemu-io reading commands from a pipe, one connection for its lifetime.
 * read16() / write16() send a command and wait (with a deadline) for its result line.
 */
export class HeldClient {
  private out = '';
  private readonly proc: ChildProcessWithoutNullStreams;
  private exited = false;

  constructor(uri: string) {
    this.proc = spawn('qemu-io', ['-f', 'raw', uri], { stdio: 'pipe' });
    this.proc.stdout.on('data', (d: Buffer) => (this.out += d.toString('latin1')));
    this.proc.stderr.on('data', (d: Buffer) => (this.out += d.toString('latin1')));
    this.proc.on('exit', () => (this.exited = true));
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  private async command(cmd: string, done: RegExp): Promise<string> {
    const start = this.out.length;
    this.proc.stdin.write(`${cmd}\n`);
    await pollFor(
      async () =>
        done.test(this.out.slice(start)) || /failed|error/i.test(this.out.slice(start)) || this.exited,
      10_000,
      `qemu-io "${cmd}"`,
    );
    const text = this.out.slice(start);
    if (!done.test(text)) throw new Error(`qemu-io "${cmd}" failed: ${text.trim()}`);
    return text;
  }

  /** First 16 bytes as text (from `read -v 0 16`'s hex dump). */
  async read16(): Promise<string> {
    const text = await this.command('read -v 0 16', /read 16\/16 bytes/);
    const m = /00000000:(?: +[0-9a-f]{2}){16} +(.{16})$/m.exec(text);
    if (!m?.[1]) throw new Error(`unexpected qemu-io output: ${text}`);
    return m[1];
  }

  async write16(byte: number): Promise<void> {
    await this.command(`write -P 0x${byte.toString(16)} 0 16`, /wrote 16\/16 bytes/);
  }

  async close(): Promise<void> {
    if (this.exited) return;
    this.proc.stdin.end('quit\n');
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
