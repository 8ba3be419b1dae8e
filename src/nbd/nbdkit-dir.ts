import * as path from 'node:path';
import type { CommandRunner } from '../command/runner.js';
import { localRunner } from '../command/runner.js';
import { exportNameSchema } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import { localFs, type ExportFs } from './fs.js';
import { listExports, nbdUri, probeExport, waitUntilListing, type NbdEndpoint } from './nbdinfo.js';
import { commandOf, isAlive, parsePid, pollUntil, terminate } from './process.js';
import type { ConfiguredExport, ExportBackend, ExportSpec, ProbeResult, ServedExport } from './types.js';
import { NbdValidationError, validateExportName, validateExportSpec, validatePath } from './validation.js';

/**
 * Default backend: `nbdkit file dir=EXPORTS_DIR`. Export `migration-vol-<name>` is a symlink
 * `EXPORTS_DIR/migration-vol-<name>` → `/dev/mapper/<name>`. nbdkit re-reads the directory on
 * every NBD_OPT_LIST and opens the entry per connection, following symlinks, so add / remove /
 * retarget take effect for the next client with no signal and no restart
 * (docs/nbd-servers.md, fact 6). A dangling link is neither listed nor served
 * ("server has no export named"), so an export whose device is not there yet is simply absent.
 *
 * Links are replaced atomically: a new link is made under a temp name in `EXPORTS_DIR/.staging`
 * (a directory, which nbdkit does not serve, so the temp name is never listed) and renamed onto
 * the export name.
 */

export const STAGING_DIR_NAME = '.staging';

export interface NbdkitDirBackendOptions {
  exportsDir: string;
  host: string;
  port: number;
  /** Host written into nbd:// URIs for clients; default `host`. */
  uriHost?: string;
  runner?: CommandRunner;
  fs?: ExportFs;
  logger?: Logger;
  /** The server process for this directory (start/stop); optional. */
  supervisor?: NbdkitSupervisor;
}

export class NbdkitDirBackend implements ExportBackend {
  readonly kind = 'nbdkit-dir' as const;
  readonly exportsDir: string;
  private readonly ep: NbdEndpoint;
  private readonly runner: CommandRunner;
  private readonly fs: ExportFs;
  private readonly log: Logger | undefined;
  private readonly uriHost: string;
  readonly supervisor: NbdkitSupervisor | undefined;

  constructor(opts: NbdkitDirBackendOptions) {
    this.supervisor = opts.supervisor;
    this.exportsDir = validatePath(opts.exportsDir, 'exportsDir');
    this.ep = { host: opts.host, port: opts.port };
    this.uriHost = opts.uriHost ?? opts.host;
    this.runner = opts.runner ?? localRunner;
    this.fs = opts.fs ?? localFs;
    this.log = opts.logger?.child({ component: 'nbd', backend: this.kind });
  }

  private linkPath(exportName: string): string {
    return path.join(this.exportsDir, exportName);
  }

  async ensure(spec: ExportSpec): Promise<{ created: boolean; changed: boolean; configPath: string }> {
    const { exportName, targetPath } = validateExportSpec(spec);
    const linkPath = this.linkPath(exportName);
    await this.fs.mkdirp(this.exportsDir);
    const kind = await this.fs.kindOf(linkPath);
    if (kind !== undefined && kind !== 'symlink') {
      // Something we did not create sits under an export name: do not clobber it.
      throw new NbdValidationError('exportName', `${linkPath} exists and is a ${kind}, not a symlink`);
    }
    const current = kind === 'symlink' ? await this.fs.readlink(linkPath) : undefined;
    if (current === targetPath) return { created: false, changed: false, configPath: linkPath };
    await this.fs.replaceSymlink(targetPath, linkPath, path.join(this.exportsDir, STAGING_DIR_NAME));
    this.log?.info(
      { exportName, targetPath, previous: current ?? null },
      current ? 'export retargeted' : 'export created',
    );
    return { created: current === undefined, changed: true, configPath: linkPath };
  }

  async remove(exportName: string): Promise<{ removed: boolean }> {
    const name = validateExportName(exportName);
    const linkPath = this.linkPath(name);
    const kind = await this.fs.kindOf(linkPath);
    if (kind === undefined) return { removed: false };
    if (kind !== 'symlink') {
      throw new NbdValidationError(
        'exportName',
        `${linkPath} is a ${kind}, not an export symlink; not removing it`,
      );
    }
    const removed = await this.fs.remove(linkPath);
    if (removed) this.log?.info({ exportName: name }, 'export removed');
    return { removed };
  }

  async configured(exportName: string): Promise<ConfiguredExport | undefined> {
    const configPath = this.linkPath(validateExportName(exportName));
    if ((await this.fs.kindOf(configPath)) !== 'symlink') return undefined;
    const targetPath = await this.fs.readlink(configPath);
    return targetPath === undefined ? undefined : { exportName, targetPath, configPath };
  }

  async listConfigured(): Promise<ConfiguredExport[]> {
    const out: ConfiguredExport[] = [];
    for (const e of await this.fs.list(this.exportsDir)) {
      if (e.kind !== 'symlink' || !exportNameSchema.safeParse(e.name).success) continue;
      const configPath = this.linkPath(e.name);
      const targetPath = await this.fs.readlink(configPath);
      if (targetPath !== undefined) out.push({ exportName: e.name, targetPath, configPath });
    }
    return out.sort((a, b) => a.exportName.localeCompare(b.exportName));
  }

  /** nbdkit opens each file for NBD_OPT_INFO, so the listed sizes are real. */
  listServed(): Promise<ServedExport[]> {
    return listExports(this.ep, { runner: this.runner, withSizes: true });
  }

  probe(exportName: string): Promise<ProbeResult> {
    return probeExport(this.ep, validateExportName(exportName), { runner: this.runner });
  }

  uriFor(exportName: string): string {
    return nbdUri({ host: this.uriHost, port: this.ep.port }, validateExportName(exportName));
  }
}

export interface NbdkitSupervisorOptions {
  exportsDir: string;
  /** Listen address; loopback unless told otherwise. */
  host?: string;
  port: number;
  pidFile: string;
  runner?: CommandRunner;
  fs?: ExportFs;
  logger?: Logger;
  /** Program name or path; default `nbdkit`. */
  nbdkit?: string;
  /** How long start() waits for the server to answer NBD_OPT_LIST. */
  readyTimeoutMs?: number;
}

/**
 * Starts / stops `nbdkit file dir=…` daemonized with `-P pidfile` (so it survives our worker
 * restarting and can run where the runner runs, e.g. inside the lab VM), kills it by the PID in
 * that file, and waits until it answers the NBD protocol rather than sleeping.
 *
 * Command: `nbdkit -P PIDFILE -i HOST -p PORT file dir=EXPORTS_DIR`. nbdkit binds before it
 * forks into the background and redirects its stdio, so the runner returns once it is up.
 */
export class NbdkitSupervisor {
  private readonly runner: CommandRunner;
  private readonly fs: ExportFs;
  private readonly log: Logger | undefined;
  readonly host: string;

  constructor(private readonly opts: NbdkitSupervisorOptions) {
    validatePath(opts.exportsDir, 'exportsDir');
    validatePath(opts.pidFile, 'pidFile');
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
      throw new NbdValidationError('port', 'must be an integer 1..65535');
    }
    this.host = opts.host ?? '127.0.0.1';
    this.runner = opts.runner ?? localRunner;
    this.fs = opts.fs ?? localFs;
    this.log = opts.logger?.child({ component: 'nbd', supervisor: 'nbdkit' });
  }

  private get ep(): NbdEndpoint {
    return { host: this.host, port: this.opts.port };
  }

  /** PID from the pid file if that process is alive and is nbdkit. */
  async pid(): Promise<number | undefined> {
    const pid = parsePid(await this.fs.readText(this.opts.pidFile));
    if (pid === undefined || !(await isAlive(this.runner, pid))) return undefined;
    const comm = await commandOf(this.runner, pid);
    return comm === 'nbdkit' ? pid : undefined;
  }

  /** Start (idempotent: an already running server from our pid file is kept). */
  async start(): Promise<{ pid: number; started: boolean }> {
    const running = await this.pid();
    if (running !== undefined) {
      await waitUntilListing(this.ep, {
        runner: this.runner,
        deadlineMs: this.opts.readyTimeoutMs ?? 30_000,
      });
      return { pid: running, started: false };
    }
    await this.fs.mkdirp(this.opts.exportsDir);
    await this.fs.remove(this.opts.pidFile);
    const args = [
      '-P',
      this.opts.pidFile,
      '-i',
      this.host,
      '-p',
      String(this.opts.port),
      'file',
      `dir=${this.opts.exportsDir}`,
    ];
    const r = await this.runner.run(this.opts.nbdkit ?? 'nbdkit', args, { timeoutMs: 30_000 });
    if (r.exitCode !== 0) {
      throw new Error(
        `nbdkit ${args.join(' ')} failed (exit ${r.exitCode}): ${(r.stderr || r.stdout).trim()}`,
      );
    }
    let pid: number | undefined;
    await pollUntil(
      async () => (pid = parsePid(await this.fs.readText(this.opts.pidFile))) !== undefined,
      10_000,
    );
    if (pid === undefined) throw new Error(`nbdkit started but wrote no pid to ${this.opts.pidFile}`);
    const thePid = pid;
    await waitUntilListing(this.ep, {
      runner: this.runner,
      deadlineMs: this.opts.readyTimeoutMs ?? 30_000,
      stillAlive: () => isAlive(this.runner, thePid),
    });
    this.log?.info({ pid: thePid, port: this.opts.port, exportsDir: this.opts.exportsDir }, 'nbdkit started');
    return { pid: thePid, started: true };
  }

  /**
   * Start it only if it is not running (a pid-file check, no NBD round trip): cheap enough for
   * every export step, which uses it to bring back a server that died.
   */
  async ensureRunning(): Promise<{ pid: number; started: boolean }> {
    const pid = await this.pid();
    if (pid !== undefined) return { pid, started: false };
    this.log?.warn({ pidFile: this.opts.pidFile }, 'nbdkit is not running; starting it');
    return this.start();
  }

  /** SIGTERM the PID from the pid file (SIGKILL after a grace period). Missing → success. */
  async stop(graceMs = 5_000): Promise<{ stopped: boolean }> {
    const pid = await this.pid();
    if (pid === undefined) return { stopped: false };
    if (!(await terminate(this.runner, pid, graceMs))) throw new Error(`nbdkit pid ${pid} did not exit`);
    await this.fs.remove(this.opts.pidFile);
    this.log?.info({ pid }, 'nbdkit stopped');
    return { stopped: true };
  }
}
