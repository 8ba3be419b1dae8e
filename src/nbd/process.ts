import type { CommandRunner } from '../command/runner.js';

/**
 * Process control for daemonized NBD servers, all through a CommandRunner (argv arrays) so the
 * same code drives a server inside the lab VM. Processes are addressed by PID only — never by
 * name (no pkill/killall): another nbd-server or nbdkit on the host is not ours.
 * Needs procps (`ps`, `pgrep`) and `kill` (procps / util-linux) where the server runs.
 */

/** A pid file's contents → PID (> 1), or undefined. */
export function parsePid(text: string | undefined): number | undefined {
  const t = text?.trim() ?? '';
  if (!/^\d+$/.test(t)) return undefined;
  const pid = Number(t);
  return pid > 1 ? pid : undefined;
}

/**
 * Alive = exists and is not a zombie. A daemon's parent is PID 1 (or a subreaper), which in a
 * container may never reap it, so `kill -0` alone would call a dead server alive.
 */
export async function isAlive(runner: CommandRunner, pid: number): Promise<boolean> {
  const r = await runner.run('ps', ['-o', 'stat=', '-p', String(pid)], { timeoutMs: 5_000 });
  if (r.exitCode !== 0) return false;
  const stat = r.stdout.trim();
  return stat !== '' && !stat.startsWith('Z');
}

/** The command name of a PID (`ps -o comm=`), to make sure a pid file still names our server. */
export async function commandOf(runner: CommandRunner, pid: number): Promise<string | undefined> {
  const r = await runner.run('ps', ['-o', 'comm=', '-p', String(pid)], { timeoutMs: 5_000 });
  if (r.exitCode !== 0) return undefined;
  return r.stdout.trim() || undefined;
}

export async function childrenOf(runner: CommandRunner, pid: number): Promise<number[]> {
  const r = await runner.run('pgrep', ['-P', String(pid)], { timeoutMs: 5_000 });
  // pgrep: 0 = some matched, 1 = none matched.
  if (r.exitCode !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

export async function signal(
  runner: CommandRunner,
  pid: number,
  sig: 'TERM' | 'KILL' | 'HUP',
): Promise<boolean> {
  const r = await runner.run('kill', [`-${sig}`, String(pid)], { timeoutMs: 5_000 });
  return r.exitCode === 0;
}

/** Poll (no fixed sleep) until `cond()` holds or the deadline passes; returns whether it held. */
export async function pollUntil(
  cond: () => Promise<boolean>,
  deadlineMs: number,
  intervalMs = 25,
): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= end) return false;
    await new Promise((res) => setTimeout(res, intervalMs));
  }
}

/** SIGTERM, wait for exit, SIGKILL after `graceMs`, wait again. Returns whether it is gone. */
export async function terminate(runner: CommandRunner, pid: number, graceMs = 5_000): Promise<boolean> {
  if (!(await isAlive(runner, pid))) return true;
  await signal(runner, pid, 'TERM');
  if (await pollUntil(async () => !(await isAlive(runner, pid)), graceMs)) return true;
  await signal(runner, pid, 'KILL');
  return pollUntil(async () => !(await isAlive(runner, pid)), graceMs);
}
