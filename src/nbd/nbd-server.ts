import * as path from 'node:path';
import type { CommandRunner } from '../command/runner.js';
import { localRunner } from '../command/runner.js';
import { exportNameSchema } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import { compareExports, type ExportComparison } from './compare.js';
import { localFs, type ExportFs } from './fs.js';
import { listExports, nbdUri, probeExport, waitUntilListing, type NbdEndpoint } from './nbdinfo.js';
import { childrenOf, commandOf, isAlive, parsePid, pollUntil, signal, terminate } from './process.js';
import type { ConfiguredExport, ExportBackend, ExportSpec, ProbeResult, ServedExport } from './types.js';
import { NbdValidationError, validateExportName, validateExportSpec, validatePath } from './validation.js';

/**
 * nbd-server backend, for sites that run nbd-server today. Facts it is built on
 * (docs/nbd-servers.md):
 *
 * - The section name is the export name; `exportname =` is the file path, opened per connection
 *   after NBD_OPT_GO (fact 4), so `/dev/mapper/<name>` never needs a config change when the dm
 *   table is reloaded.
 * - `includedir`: only regular `*.conf` files are read, and one malformed file fails the whole
 *   parse. We write `<confDir>/<exportName>.conf`, one section each, via a
 *   temp name that does not end in `.conf` plus rename(2), never leaving a partial `.conf`.
 * - SIGHUP only appends unseen section names (fact 1) and on Debian 12's 3.24 corrupts the heap
 *   (gh-143, fact 2): we send SIGHUP only to ≥ 3.25 (`nbd-server -V`).
 * - On 3.24 a new export is loaded by a *safe restart* (see NbdServerSupervisor.safeRestart).
 * - `allowlist = true` is read only at start-up; listing gives names, sizes 0 (fact 5).
 * - We never write `user = nbd`: Debian's default user cannot open root:disk 0660
 *   `/dev/mapper/*` ("Access denied by server configuration", fact 3). A site that insists on
 *   `user = nbd` must add that user to group `disk`.
 * - The -C path must be absolute (nbd-server chdir()s to / and re-reads from there on SIGHUP).
 */

// ---------------------------------------------------------------------------------------------
// Version

export interface NbdServerVersion {
  major: number;
  minor: number;
  patch: number;
  text: string;
}

/** Parse `nbd-server -V` output (`This is nbd-server version 3.24`). */
export function parseNbdServerVersion(output: string): NbdServerVersion | undefined {
  const m =
    /nbd-server version (\d+)\.(\d+)(?:\.(\d+))?/i.exec(output) ??
    /\b(\d+)\.(\d+)(?:\.(\d+))?\b/.exec(output);
  if (!m) return undefined;
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: m[3] === undefined ? 0 : Number(m[3]),
    text: `${m[1]}.${m[2]}${m[3] === undefined ? '' : `.${m[3]}`}`,
  };
}

/** SIGHUP is safe from 3.25 on (gh-143 fixed by bb9c47f/90dc1ad and 7bc199e/db66b92). */
export function sighupIsSafe(v: NbdServerVersion | undefined): boolean {
  if (!v) return false;
  return v.major > 3 || (v.major === 3 && v.minor >= 25);
}

// ---------------------------------------------------------------------------------------------
// Config rendering / parsing

export interface MainConfig {
  host: string;
  port: number;
  includeDir: string;
}

const listenAddrRe = /^[A-Za-z0-9.:-]+$/;

/** The `[generic]` main config. No `user`/`group` (see the module comment). */
export function renderMainConfig(c: MainConfig): string {
  if (!listenAddrRe.test(c.host)) throw new NbdValidationError('host', 'must be an IP address or host name');
  if (!Number.isInteger(c.port) || c.port < 1 || c.port > 65535) {
    throw new NbdValidationError('port', 'must be an integer 1..65535');
  }
  const includeDir = validatePath(c.includeDir, 'includeDir');
  return [
    '# Written by volume-lifecycle. One export per file in includedir.',
    '# No "user = nbd": /dev/mapper/* is root:disk 0660 (the nbd user would need group disk).',
    '[generic]',
    `listenaddr = ${c.host}`,
    `port = ${c.port}`,
    'allowlist = true',
    `includedir = ${includeDir}`,
    '',
  ].join('\n');
}

/** One export's include file: `[migration-vol-x]` / `exportname = /dev/mapper/x`. */
export function renderExportConfig(spec: ExportSpec): string {
  const { exportName, targetPath } = validateExportSpec(spec);
  return `[${exportName}]\nexportname = ${targetPath}\n`;
}

/** Sections and their `exportname` from an include file (what we wrote, or close to it). */
export function parseExportConfig(text: string): ExportSpec[] {
  const out: ExportSpec[] = [];
  let section: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const sec = /^\[([^\]]+)\]$/.exec(line);
    if (sec) {
      section = sec[1];
      continue;
    }
    const kv = /^exportname\s*=\s*(.*)$/.exec(line);
    if (kv && section !== undefined) out.push({ exportName: section, targetPath: kv[1] ?? '' });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Supervisor

export interface NbdServerSupervisorOptions {
  /** Absolute path of the main config we write (`[generic]`). */
  mainConfigPath: string;
  confDir: string;
  host?: string;
  port: number;
  pidFile: string;
  runner?: CommandRunner;
  fs?: ExportFs;
  logger?: Logger;
  /** Program name or path; default `nbd-server`. */
  nbdServer?: string;
  readyTimeoutMs?: number;
}

export class NbdServerNoExportsError extends Error {
  constructor(confDir: string) {
    super(
      `nbd-server refuses to start without exports ("No configured exports; quitting"): no *.conf in ${confDir}`,
    );
    this.name = 'NbdServerNoExportsError';
  }
}

/**
 * Starts / stops / reloads nbd-server. It always daemonizes (3.24 has no foreground mode; `-d`
 * serves a single client), writes `-p PIDFILE` and is addressed by that PID only.
 *
 * Orphans: a safe restart leaves the old generation's per-connection children running (that is
 * its point). Their PIDs are kept in `<pidFile>.orphans` so stop() can end them too.
 */
export class NbdServerSupervisor {
  readonly host: string;
  readonly port: number;
  readonly confDir: string;
  readonly mainConfigPath: string;
  readonly pidFile: string;
  private readonly runner: CommandRunner;
  private readonly fs: ExportFs;
  private readonly log: Logger | undefined;
  private cachedVersion: NbdServerVersion | undefined;

  constructor(private readonly opts: NbdServerSupervisorOptions) {
    this.mainConfigPath = validatePath(opts.mainConfigPath, 'mainConfigPath');
    this.confDir = validatePath(opts.confDir, 'confDir');
    this.pidFile = validatePath(opts.pidFile, 'pidFile');
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port;
    renderMainConfig({ host: this.host, port: this.port, includeDir: this.confDir }); // validates
    this.runner = opts.runner ?? localRunner;
    this.fs = opts.fs ?? localFs;
    this.log = opts.logger?.child({ component: 'nbd', supervisor: 'nbd-server' });
  }

  get endpoint(): NbdEndpoint {
    return { host: this.host, port: this.port };
  }

  private get orphansFile(): string {
    return `${this.pidFile}.orphans`;
  }

  async version(): Promise<NbdServerVersion | undefined> {
    if (this.cachedVersion) return this.cachedVersion;
    const r = await this.runner.run(this.opts.nbdServer ?? 'nbd-server', ['-V'], { timeoutMs: 10_000 });
    this.cachedVersion = parseNbdServerVersion(`${r.stdout}\n${r.stderr}`);
    return this.cachedVersion;
  }

  /** Main PID from the pid file, if alive and named nbd-server. */
  async pid(): Promise<number | undefined> {
    const pid = parsePid(await this.fs.readText(this.pidFile));
    if (pid === undefined || !(await isAlive(this.runner, pid))) return undefined;
    return (await commandOf(this.runner, pid)) === 'nbd-server' ? pid : undefined;
  }

  /** PIDs of per-connection children of the current main process. */
  async connectionPids(): Promise<number[]> {
    const pid = await this.pid();
    return pid === undefined ? [] : childrenOf(this.runner, pid);
  }

  async orphans(): Promise<number[]> {
    const text = await this.fs.readText(this.orphansFile);
    const pids = (text ?? '')
      .split(/\s+/)
      .map((s) => parsePid(s))
      .filter((p): p is number => p !== undefined);
    const alive: number[] = [];
    for (const p of pids) {
      if ((await isAlive(this.runner, p)) && (await commandOf(this.runner, p)) === 'nbd-server')
        alive.push(p);
    }
    return alive;
  }

  async writeMainConfig(): Promise<void> {
    await this.fs.mkdirp(this.confDir);
    await this.fs.mkdirp(path.dirname(this.mainConfigPath));
    const text = renderMainConfig({ host: this.host, port: this.port, includeDir: this.confDir });
    if ((await this.fs.readText(this.mainConfigPath)) !== text) {
      await this.fs.replaceText(this.mainConfigPath, text, path.dirname(this.mainConfigPath));
    }
  }

  private async hasExports(): Promise<boolean> {
    return (await this.fs.list(this.confDir)).some((e) => e.kind === 'file' && e.name.endsWith('.conf'));
  }

  /** Launch a new main process and wait until it answers NBD_OPT_LIST (`until` refines that). */
  private async launch(until?: (s: ServedExport[]) => boolean): Promise<number> {
    const args = ['-C', this.mainConfigPath, '-p', this.pidFile];
    const r = await this.runner.run(this.opts.nbdServer ?? 'nbd-server', args, { timeoutMs: 30_000 });
    if (r.exitCode !== 0) {
      throw new Error(
        `nbd-server ${args.join(' ')} failed (exit ${r.exitCode}): ${(r.stderr || r.stdout).trim()}`,
      );
    }
    let pid: number | undefined;
    await pollUntil(async () => (pid = parsePid(await this.fs.readText(this.pidFile))) !== undefined, 10_000);
    if (pid === undefined) throw new Error(`nbd-server started but wrote no pid to ${this.pidFile}`);
    const thePid = pid;
    await waitUntilListing(this.endpoint, {
      runner: this.runner,
      deadlineMs: this.opts.readyTimeoutMs ?? 10_000,
      stillAlive: () => isAlive(this.runner, thePid),
      ...(until ? { until } : {}),
    });
    return thePid;
  }

  /** Start (idempotent). Needs at least one export file (nbd-server quits without one). */
  async start(): Promise<{ pid: number; started: boolean }> {
    const running = await this.pid();
    if (running !== undefined) return { pid: running, started: false };
    await this.writeMainConfig();
    if (!(await this.hasExports())) throw new NbdServerNoExportsError(this.confDir);
    await this.fs.remove(this.pidFile);
    const pid = await this.launch();
    this.log?.info({ pid, port: this.port }, 'nbd-server started');
    return { pid, started: true };
  }

  /**
   * Stop. SIGTERM to the main PID: nbd-server's handler kills every per-connection child, so all
   * clients are dropped (docs/nbd-servers.md, "Restarts"). Orphans of earlier safe restarts are
   * SIGTERMed by PID too (a child's SIGTERM is the default action: exit).
   */
  async stop(graceMs = 5_000): Promise<{ stopped: boolean; orphansStopped: number }> {
    const pid = await this.pid();
    const orphans = await this.orphans();
    if (pid !== undefined && !(await terminate(this.runner, pid, graceMs))) {
      throw new Error(`nbd-server pid ${pid} did not exit`);
    }
    for (const o of orphans) await terminate(this.runner, o, graceMs);
    await this.fs.remove(this.orphansFile);
    if (pid !== undefined) await this.fs.remove(this.pidFile);
    this.log?.info({ pid, orphans }, 'nbd-server stopped');
    return { stopped: pid !== undefined, orphansStopped: orphans.length };
  }

  /**
   * SIGHUP the main PID so it appends new sections. Refused on versions with gh-143 (< 3.25)
   * unless `allowCrashingVersion` (tests that demonstrate the append-only semantics).
   * Waits until `expect` names are listed.
   */
  async reload(opts: { expect?: string[]; allowCrashingVersion?: boolean } = {}): Promise<void> {
    const v = await this.version();
    if (!sighupIsSafe(v) && !opts.allowCrashingVersion) {
      throw new Error(
        `refusing to SIGHUP nbd-server ${v?.text ?? '(unknown version)'}: < 3.25 corrupts its heap on SIGHUP (NetworkBlockDevice/nbd#143); use safeRestart()`,
      );
    }
    const pid = await this.pid();
    if (pid === undefined) throw new Error('nbd-server is not running');
    await signal(this.runner, pid, 'HUP');
    const expect = opts.expect ?? [];
    await waitUntilListing(this.endpoint, {
      runner: this.runner,
      deadlineMs: this.opts.readyTimeoutMs ?? 10_000,
      until: (s) => expect.every((n) => s.some((e) => e.exportName === n)),
    });
    this.log?.info({ pid, expect }, 'nbd-server reloaded (SIGHUP)');
  }

  /**
   * Load the current config into a fresh main process without dropping connected clients.
   *
   * 1. Record the old main PID's children (one per connected client) in `<pidFile>.orphans`.
   * 2. SIGKILL the old main PID only. Not SIGTERM: its handler kills every child. SIGKILL runs no
   *    handler, so the children (separate processes with their own accepted socket and open
   *    device) keep serving their clients; the kernel closes the main process's listening
   *    socket, which frees the port (children close the listener after fork).
   * 3. Wait until the old PID is gone, then start a new main process on the same port with the
   *    same -C (nbd-server sets SO_REUSEADDR, so the children's established connections on that
   *    port do not block the bind) and wait until it lists every configured name.
   *
   * Costs: between 2 and 3 new clients get "connection refused" (a few tens of ms; clients
   * retry); the orphans are no longer counted for `maxconnections` (we set none) and are ended
   * by stop() via the orphans file. Names whose .conf was deleted are gone afterwards: a safe
   * restart is also how stale exports are purged.
   */
  async safeRestart(): Promise<{ oldPid: number | undefined; newPid: number; orphaned: number[] }> {
    await this.writeMainConfig();
    if (!(await this.hasExports())) throw new NbdServerNoExportsError(this.confDir);
    const oldPid = await this.pid();
    let orphaned: number[] = [];
    if (oldPid !== undefined) {
      orphaned = await childrenOf(this.runner, oldPid);
      const keep = [...new Set([...(await this.orphans()), ...orphaned])];
      await this.fs.replaceText(this.orphansFile, keep.join('\n') + '\n', path.dirname(this.orphansFile));
      await signal(this.runner, oldPid, 'KILL');
      if (!(await pollUntil(async () => !(await isAlive(this.runner, oldPid)), 10_000))) {
        throw new Error(`old nbd-server pid ${oldPid} did not die after SIGKILL`);
      }
    }
    await this.fs.remove(this.pidFile);
    const expected = await this.configuredNames();
    const newPid = await this.launch((s) => expected.every((n) => s.some((e) => e.exportName === n)));
    this.log?.info({ oldPid, newPid, orphaned }, 'nbd-server safe restart');
    return { oldPid, newPid, orphaned };
  }

  async configuredNames(): Promise<string[]> {
    const names: string[] = [];
    for (const e of await this.fs.list(this.confDir)) {
      if (e.kind !== 'file' || !e.name.endsWith('.conf')) continue;
      const text = await this.fs.readText(path.join(this.confDir, e.name));
      for (const s of parseExportConfig(text ?? '')) names.push(s.exportName);
    }
    return names;
  }
}

// ---------------------------------------------------------------------------------------------
// Backend

export type ApplyAction = 'none' | 'started' | 'sighup' | 'safe-restart';

export interface NbdServerBackendOptions {
  confDir: string;
  host: string;
  port: number;
  uriHost?: string;
  /**
   * When given, ensure() makes the running server load a new/changed export (start, SIGHUP on
   * ≥ 3.25, safe restart otherwise). Without it the files are only written and the site's own
   * tooling must reload (result `applied: 'none'`).
   */
  supervisor?: NbdServerSupervisor;
  runner?: CommandRunner;
  fs?: ExportFs;
  logger?: Logger;
}

export class NbdServerBackend implements ExportBackend {
  readonly kind = 'nbd-server' as const;
  readonly confDir: string;
  private readonly ep: NbdEndpoint;
  private readonly uriHost: string;
  private readonly runner: CommandRunner;
  private readonly fs: ExportFs;
  private readonly log: Logger | undefined;
  readonly supervisor: NbdServerSupervisor | undefined;
  /** Serialises config application inside this process (restarts must not interleave). */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: NbdServerBackendOptions) {
    this.confDir = validatePath(opts.confDir, 'confDir');
    this.ep = { host: opts.host, port: opts.port };
    this.uriHost = opts.uriHost ?? opts.host;
    this.supervisor = opts.supervisor;
    this.runner = opts.runner ?? localRunner;
    this.fs = opts.fs ?? localFs;
    this.log = opts.logger?.child({ component: 'nbd', backend: this.kind });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  confPath(exportName: string): string {
    return path.join(this.confDir, `${exportName}.conf`);
  }

  /**
   * Write `<confDir>/<exportName>.conf` and, with a supervisor, make the server serve it.
   * `applied` says how: 'none' (already so, or no supervisor), 'started', 'sighup' (≥ 3.25, new
   * name), 'safe-restart' (3.24, or a changed path of a known name, which SIGHUP ignores).
   */
  ensure(
    spec: ExportSpec,
  ): Promise<{ created: boolean; changed: boolean; configPath: string; applied: ApplyAction }> {
    return this.serial(async () => {
      const valid = validateExportSpec(spec);
      const configPath = this.confPath(valid.exportName);
      const text = renderExportConfig(valid);
      await this.fs.mkdirp(this.confDir);
      const current = await this.fs.readText(configPath);
      let created = false;
      let changed = false;
      if (current !== text) {
        await this.fs.replaceText(configPath, text, this.confDir);
        created = current === undefined;
        changed = true;
        this.log?.info(
          { exportName: valid.exportName, targetPath: valid.targetPath, created },
          'export config written',
        );
      }
      const applied = await this.apply(valid.exportName, changed && !created);
      return { created, changed, configPath, applied };
    });
  }

  /** Make the running server serve `exportName` if it does not already (or restart on a path change). */
  private async apply(exportName: string, pathChanged: boolean): Promise<ApplyAction> {
    const sup = this.supervisor;
    if (!sup) return 'none';
    if ((await sup.pid()) === undefined) {
      await sup.start();
      return 'started';
    }
    if (!pathChanged) {
      const served = await this.listServed();
      if (served.some((s) => s.exportName === exportName)) return 'none';
      if (sighupIsSafe(await sup.version())) {
        await sup.reload({ expect: [exportName] });
        return 'sighup';
      }
    }
    await sup.safeRestart();
    return 'safe-restart';
  }

  /**
   * Delete the export's .conf. nbd-server keeps the name in memory until a restart (SIGHUP never
   * removes): `stillServed` reports whether the server still lists it; purgeStale() restarts.
   */
  remove(exportName: string): Promise<{ removed: boolean; stillServed?: boolean }> {
    return this.serial(async () => {
      const name = validateExportName(exportName);
      const removed = await this.fs.remove(this.confPath(name));
      if (removed) this.log?.info({ exportName: name }, 'export config removed');
      if (!this.supervisor || (await this.supervisor.pid()) === undefined) return { removed };
      const served = await this.listServed();
      const stillServed = served.some((s) => s.exportName === name);
      if (stillServed) this.log?.warn({ exportName: name }, 'export still served until nbd-server restarts');
      return { removed, stillServed };
    });
  }

  async configured(exportName: string): Promise<ConfiguredExport | undefined> {
    const configPath = this.confPath(validateExportName(exportName));
    const found = parseExportConfig((await this.fs.readText(configPath)) ?? '').find(
      (s) => s.exportName === exportName,
    );
    return found && { ...found, configPath };
  }

  async listConfigured(): Promise<ConfiguredExport[]> {
    const out: ConfiguredExport[] = [];
    for (const e of await this.fs.list(this.confDir)) {
      if (e.kind !== 'file' || !e.name.endsWith('.conf')) continue;
      const configPath = path.join(this.confDir, e.name);
      for (const s of parseExportConfig((await this.fs.readText(configPath)) ?? '')) {
        if (exportNameSchema.safeParse(s.exportName).success) out.push({ ...s, configPath });
      }
    }
    return out.sort((a, b) => a.exportName.localeCompare(b.exportName));
  }

  /** Names only: nbd-server answers NBD_OPT_INFO without opening the file (sizes are 0). */
  listServed(): Promise<ServedExport[]> {
    return listExports(this.ep, { runner: this.runner, withSizes: false });
  }

  probe(exportName: string): Promise<ProbeResult> {
    return probeExport(this.ep, validateExportName(exportName), { runner: this.runner });
  }

  uriFor(exportName: string): string {
    return nbdUri({ host: this.uriHost, port: this.ep.port }, validateExportName(exportName));
  }

  async compare(): Promise<ExportComparison> {
    return compareExports(await this.listConfigured(), await this.listServed());
  }

  /** Safe-restart when the server serves names that are no longer configured. */
  purgeStale(): Promise<{ restarted: boolean; stale: string[] }> {
    return this.serial(async () => {
      const { stale } = await this.compare();
      if (stale.length === 0 || !this.supervisor) return { restarted: false, stale };
      await this.supervisor.safeRestart();
      return { restarted: true, stale };
    });
  }
}

export { NbdValidationError };
