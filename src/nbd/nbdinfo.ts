import type { CommandRunner } from '../command/runner.js';
import type { ProbeResult, ServedExport } from './types.js';

/**
 * The NBD-protocol view of a running server, through `nbdinfo` (Debian package libnbd-bin).
 * Shared by every backend: what a server *has in memory* is only knowable by asking it, and
 * nbd-server in particular keeps names that are no longer in its configuration
 * (docs/nbd-servers.md, facts 1 and 5).
 *
 * - `nbdinfo --list --json URI` does NBD_OPT_LIST (+ NBD_OPT_INFO per name). nbd-server answers
 *   INFO without opening the file, so its sizes are 0 (fact 5); nbdkit opens the file, so
 *   its sizes are real.
 * - `nbdinfo --size URI/NAME` does NBD_OPT_GO: the server really opens the export's file.
 */

export interface NbdEndpoint {
  host: string;
  port: number;
}

/** `nbd://host:port[/name]`; IPv6 literals are bracketed, the name is percent-encoded. */
export function nbdUri(ep: NbdEndpoint, exportName?: string): string {
  const host = ep.host.includes(':') && !ep.host.startsWith('[') ? `[${ep.host}]` : ep.host;
  const base = `nbd://${host}:${ep.port}`;
  return exportName === undefined ? base : `${base}/${encodeURIComponent(exportName)}`;
}

export type ProbeFailureReason = Extract<ProbeResult, { ok: false }>['reason'];

/**
 * Classify nbdinfo's error text (stderr). Texts are the ones libnbd 1.14 prints, observed in
 * docs/nbd-servers.md, "What clients print":
 *
 * - `handshake: server has no export named 'x': No such file or directory` → NBD_REP_ERR_UNKNOWN:
 *   the server does not know the name (nbdkit: no such entry / dangling link).
 * - `handshake: server policy prevents NBD_OPT_GO` → NBD_REP_ERR_POLICY: nbd-server knows the name
 *   but could not open the file (missing device, permission) — qemu's wording of the same reply is
 *   `Access denied by server configuration` / `Denied by server for option 7 (go)`.
 * - `connect: …: could not connect to remote host: Connection refused`, `recv: Connection reset by
 *   peer`, `server disconnected unexpectedly` → the server is down or its child aborted
 *   (nbd-server 3.24 heap corruption after SIGHUP, gh-143).
 */
export function classifyProbeError(stderr: string): ProbeFailureReason {
  const s = stderr;
  if (/has no export named|Export unknown|Requested export not available|not present/i.test(s)) {
    return 'unknown-export';
  }
  if (/policy prevents|Access denied|Denied by server/i.test(s)) {
    return 'access-denied';
  }
  if (
    /Connection refused|Connection reset|could not connect|server disconnected|Broken pipe|timed out|No route to host|Network is unreachable|Connection closed|unexpected EOF|end of file/i.test(
      s,
    )
  ) {
    return 'connection-failed';
  }
  return 'other';
}

export class NbdListError extends Error {
  constructor(
    message: string,
    public readonly reason: ProbeFailureReason,
  ) {
    super(message);
    this.name = 'NbdListError';
  }
}

const listJsonSchemaCheck = (
  v: unknown,
): v is { exports: { 'export-name': string; 'export-size'?: number }[] } =>
  typeof v === 'object' &&
  v !== null &&
  Array.isArray((v as { exports?: unknown }).exports) &&
  (v as { exports: unknown[] }).exports.every(
    (e) =>
      typeof e === 'object' &&
      e !== null &&
      typeof (e as Record<string, unknown>)['export-name'] === 'string',
  );

export interface NbdinfoOptions {
  runner: CommandRunner;
  /** Per-invocation timeout (ms). */
  timeoutMs?: number;
  /** Program name or path; default `nbdinfo`. */
  nbdinfo?: string;
}

/**
 * Names the server lists (NBD_OPT_LIST). `withSizes`: keep the sizes from NBD_OPT_INFO — only
 * meaningful for servers that open the file for INFO (nbdkit); nbd-server reports 0.
 * Throws NbdListError (with a classified reason) when the server cannot be asked.
 */
export async function listExports(
  ep: NbdEndpoint,
  opts: NbdinfoOptions & { withSizes?: boolean },
): Promise<ServedExport[]> {
  const r = await opts.runner.run(opts.nbdinfo ?? 'nbdinfo', ['--list', '--json', nbdUri(ep)], {
    timeoutMs: opts.timeoutMs ?? 15_000,
  });
  if (r.exitCode !== 0) {
    const msg = (r.stderr || r.stdout).trim();
    throw new NbdListError(`nbdinfo --list ${nbdUri(ep)} failed: ${msg}`, classifyProbeError(msg));
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout);
  } catch (e) {
    throw new NbdListError(`nbdinfo --list: output is not JSON: ${(e as Error).message}`, 'other');
  }
  if (!listJsonSchemaCheck(parsed)) {
    throw new NbdListError('nbdinfo --list: JSON has no "exports" array of named exports', 'other');
  }
  return parsed.exports.map((e) => {
    const out: ServedExport = { exportName: e['export-name'] };
    if (opts.withSizes && typeof e['export-size'] === 'number') out.sizeBytes = e['export-size'];
    return out;
  });
}

/** Open one export with NBD_OPT_GO and report its size, or why it could not be opened. */
export async function probeExport(
  ep: NbdEndpoint,
  exportName: string,
  opts: NbdinfoOptions,
): Promise<ProbeResult> {
  const r = await opts.runner.run(opts.nbdinfo ?? 'nbdinfo', ['--size', nbdUri(ep, exportName)], {
    timeoutMs: opts.timeoutMs ?? 15_000,
  });
  if (r.exitCode === 0) {
    const text = r.stdout.trim();
    if (/^\d+$/.test(text)) return { ok: true, sizeBytes: Number(text) };
    return { ok: false, reason: 'other', message: `nbdinfo --size printed ${JSON.stringify(text)}` };
  }
  const message = (r.stderr || r.stdout).trim();
  return { ok: false, reason: classifyProbeError(message), message };
}

/**
 * Poll until the server answers NBD_OPT_LIST (it accepts connections and negotiates), or the
 * deadline passes. `stillAlive` lets a supervisor stop waiting as soon as the process died.
 */
export async function waitUntilListing(
  ep: NbdEndpoint,
  opts: NbdinfoOptions & {
    deadlineMs: number;
    intervalMs?: number;
    stillAlive?: () => Promise<boolean>;
    until?: (served: ServedExport[]) => boolean;
  },
): Promise<ServedExport[]> {
  const end = Date.now() + opts.deadlineMs;
  let last: string;
  for (;;) {
    try {
      const served = await listExports(ep, {
        ...opts,
        timeoutMs: Math.min(opts.timeoutMs ?? 15_000, 15_000),
      });
      if (!opts.until || opts.until(served)) return served;
      last = `listing did not match yet: ${served.map((s) => s.exportName).join(', ')}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (opts.stillAlive && !(await opts.stillAlive())) {
      throw new Error(`NBD server at ${nbdUri(ep)} exited while waiting for it (${last})`);
    }
    if (Date.now() >= end) {
      throw new Error(`NBD server at ${nbdUri(ep)} not ready within ${opts.deadlineMs} ms: ${last}`);
    }
    await new Promise((res) => setTimeout(res, opts.intervalMs ?? 50));
  }
}
