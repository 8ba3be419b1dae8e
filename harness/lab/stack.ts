import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { execa, type ResultPromise } from 'execa';
import type { Pool } from 'mysql2/promise';
import { VolumeLifecycleClient } from '../../src/client/index.js';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import { startSimulator, type HypervisorBackend } from '../cloudstack-sim/index.js';
import { localRunner } from '../../src/command/runner.js';
import { listExports } from '../../src/nbd/nbdinfo.js';
import { installedService, installInto, releaseAs } from './release.js';
import { FileTargetHypervisor, QmpHypervisor, startLab, type GuestProcess, type Lab } from './index.js';
import { connectClient } from '../../src/temporal/connection.js';
import { Failpoints } from '../../src/worker/failpoints.js';
import { createControlWorker } from '../../src/worker/workers.js';
import type { EngineRows } from '../../src/engine-contract/engine-rows.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface StackDatabase {
  pool: Pool;
  /** Its name on the server (DB_NAME), for a control worker run as a separate process. */
  name?: string;
  close(): Promise<void>;
}
export const GUEST_EXPORTS_DIR = '/run/volume-lifecycle/exports';
const GUEST_FAILPOINTS_DIR = '/run/volume-lifecycle/failpoints';

/**
 * The whole product on real parts: the appliance is a QEMU guest (real kernel, dm, udev, nbdkit)
 * running the host worker; the control worker, Temporal dev server, MariaDB and the CloudStack
 * simulator (hot-plugging virtio disks into the guest over QMP) run here.
 */
export interface LabStack {
  lab: Lab;
  db: StackDatabase;
  sim: Awaited<ReturnType<typeof startSimulator>>;
  cs: CloudStackClient;
  volumes: VolumeLifecycleClient;
  temporal: Awaited<ReturnType<typeof connectClient>>['client'];
  applianceVmId: string;
  targetVmId: string;
  prefix: string;
  volumeDir: string;
  /** Wrap the appliance's hypervisor (fault injection at the hot-plug level). */
  hypervisorOverride: { wrap?: (inner: HypervisorBackend) => HypervisorBackend };
  /** kill -9 the appliance's host worker; resolves once its supervisor has started a new one. */
  restartHostWorker(): Promise<void>;
  /** Install the next release (this one as `version`) and restart the unit; the old worker, draining. */
  upgradeHostWorker(version: string): Promise<GuestProcess>;
  /** The installed release's version the host worker was first started from. */
  hostWorkerVersion(): string | undefined;
  /** How many times the supervisor has started a new host worker. */
  hostWorkerRestarts(): number;
  /** Wait until the supervisor has started host worker number `after + 1` (after a crash). */
  waitHostWorkerRestart(after: number, timeoutMs?: number): Promise<void>;
  /** With `controlWorker: 'process'`: wait for its death, start a new one. */
  waitControlWorkerDead(timeoutMs?: number): Promise<void>;
  respawnControlWorker(): Promise<void>;
  /** Failpoints of the worker that runs an activity type (host* activities: the appliance's). */
  failpointsFor(activityType: string): Failpoints;
  createVolume(sizeGb?: number): Promise<string>;
  imagePath(volumeId: string): string;
  dmTable(name: string): Promise<string | null>;
  dmNames(): Promise<string[]>;
  servedExports(): Promise<string[]>;
  nbdUri(exportName: string): string;
  close(): Promise<void>;
}

export interface LabStackOptions {
  /** A migrated database; closed with the stack. */
  db: StackDatabase;
  /** Names task queues (`t-<tag>-…`) so runs never share queues. */
  tag: string;
  correlationTimeoutMs?: number;
  temporalAddress?: string;
  /** Simulated CloudStack job duration. */
  jobDurationMs?: number;
  /**
   * Run the control worker in this process (default), or as a separate process (control-main)
   * so a crash test can kill it with SIGKILL and start another.
   */
  controlWorker?: 'in-process' | 'process';
  /**
   * What the appliance runs (default: LAB_HOST_WORKER, else 'release'): the built release,
   * installed with its own installer and started from its unit's command line and env file, as
   * on an appliance; or 'checkout', this tree through tsx (to iterate without a build).
   */
  hostWorker?: 'release' | 'checkout';
  /** The migration engine's database beside ours (ENGINE_DB_NAME): its rows follow ours. */
  engine?: EngineRows;
}

/** How the guest starts its host worker: argv, env and working directory. */
interface HostWorkerCommand {
  argv: string[];
  env: Record<string, string>;
  cwd?: string;
  what: string;
}

export async function startLabStack(opts: LabStackOptions): Promise<LabStack> {
  const tag = opts.tag;
  const temporalAddress = opts.temporalAddress ?? process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
  const cleanups: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch((e) => console.error('cleanup:', e));
  };
  try {
    const db = opts.db;
    cleanups.push(() => db.close());
    const applianceVmId = randomUUID();
    const targetVmId = randomUUID();
    const prefix = `t-${tag}-${randomBytes(3).toString('hex')}`;
    const volumeDir = await mkdtemp(path.join(os.tmpdir(), 'vl-volumes-'));
    cleanups.push(() => rm(volumeDir, { recursive: true, force: true }));
    const controlFailpoints = new Failpoints(
      await mkdtemp(path.join(os.tmpdir(), 'vl-failpoints-')),
      localRunner,
    );
    cleanups.push(() => rm(controlFailpoints.dir, { recursive: true, force: true }));

    const lab = await startLab({ temporal: { hostPort: Number(temporalAddress.split(':').pop()) } });
    cleanups.push(() => lab.close());
    const hostFailpoints = new Failpoints(GUEST_FAILPOINTS_DIR, lab.runner);
    await hostFailpoints.init();
    const qmp = new QmpHypervisor(lab, { dir: volumeDir, vmId: applianceVmId });
    const target = new FileTargetHypervisor({ dir: volumeDir });
    const hypervisorOverride: LabStack['hypervisorOverride'] = {};
    const sim = await startSimulator({
      applianceVmId,
      targetVmIds: [targetVmId],
      jobDurationMs: opts.jobDurationMs ?? 20,
      hypervisorFor: (vmId) => (vmId === applianceVmId ? (hypervisorOverride.wrap?.(qmp) ?? qmp) : target),
    });
    cleanups.push(() => sim.sim.close());
    const cs = new CloudStackClient({
      url: sim.sim.url,
      apiKey: sim.sim.apiKey,
      secretKey: sim.sim.secretKey,
      pollInitialMs: 20,
    });

    // The host worker runs inside the appliance, on the real kernel.
    const settings = {
      TEMPORAL_ADDRESS: lab.guestTemporalAddress!,
      APPLIANCE_VM_ID: applianceVmId,
      TASK_QUEUE_PREFIX: prefix,
      EXPORT_BACKEND: 'nbdkit-dir',
      NBD_EXPORTS_DIR: GUEST_EXPORTS_DIR,
      NBD_HOST: '0.0.0.0',
      NBD_PORT: '10809',
      NBD_URI_HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      FAILPOINTS_DIR: hostFailpoints.dir,
    };
    let command: HostWorkerCommand;
    let installed: Awaited<ReturnType<typeof installedService>> | undefined;
    if ((opts.hostWorker ?? process.env.LAB_HOST_WORKER ?? 'release') === 'release') {
      // One difference from an appliance: the guest has no systemd to run the nbdkit unit, so
      // NBD_MANAGE_SERVER=true lets the host worker start nbdkit (daemonized: it outlives the
      // worker), the setting for appliances without that unit.
      installed = await installedService('appliance', 'volume-lifecycle-host-worker.service', {
        ...settings,
        NBD_MANAGE_SERVER: 'true',
      });
      cleanups.push(installed.cleanup);
      command = { argv: installed.argv, env: installed.env, what: `release ${installed.version}` };
    } else {
      command = {
        argv: ['node', '--import', 'tsx', 'src/worker/host-main.ts'],
        env: settings,
        cwd: ROOT,
        what: 'checkout (tsx)',
      };
    }
    const spawnHostWorker = async (attempt = 1): Promise<GuestProcess> => {
      const t0 = Date.now();
      const p = await lab.spawnInGuest(command.argv, {
        ...(command.cwd ? { cwd: command.cwd } : {}),
        env: command.env,
      });
      try {
        await p.waitForLog(/host worker ready/, 240_000);
        hostWorkerStarts.push(Date.now() - t0);
      } catch (err) {
        // Node under TCG emulation has been seen to die of SIGSEGV at start-up, rarely (exit 139,
        // empty log): a fault of the emulated CPU, not of our code. Start it once more.
        if (attempt < 2 && /exited \(139\)/.test(String(err))) {
          console.error(`lab: the guest's node crashed at start-up (SIGSEGV); starting it again`);
          return spawnHostWorker(attempt + 1);
        }
        throw err;
      }
      return p;
    };
    // The appliance runs its host worker under a supervisor (systemd's Restart=always in
    // production): whenever it dies — a crash test's kill -9, or anything else — a new one is
    // started. A death nobody asked for is printed with its exit code and log, so a CI run that
    // loses its worker says why instead of timing out later.
    const hostWorkerStarts: number[] = [];
    let guestWorker = await spawnHostWorker();
    console.error(`lab: host worker from the ${command.what}, ready ${hostWorkerStarts[0]} ms after spawn`);
    let hostRestarts = 0;
    let expectedDeaths = 0;
    let supervising = true;
    const supervisor = (async () => {
      while (supervising) {
        await new Promise((r) => setTimeout(r, 500));
        if (!supervising) break;
        const st = await guestWorker.status().catch(() => ({ exited: false, exitCode: undefined }));
        if (!st.exited || !supervising) continue;
        if (expectedDeaths > 0) expectedDeaths--;
        else if (st.exitCode !== 137) {
          // 137 = SIGKILL: a crash-after failpoint (the test asked for it) or an explicit kill.
          const log = await guestWorker.readLog().catch(() => '(log unreadable)');
          const kernel = (await readFile(lab.consoleLog, 'utf8').catch(() => ''))
            .split('\n')
            .filter((l) => /oom|killed process|segfault|traps:/i.test(l))
            .slice(-10);
          console.error(
            `lab: the host worker exited unexpectedly (exit ${st.exitCode}); restarting it. Its log ends:\n${log.slice(-3000)}\nkernel: ${kernel.join('\n') || '(nothing about it)'}`,
          );
        }
        for (;;) {
          try {
            guestWorker = await spawnHostWorker();
            break;
          } catch (err) {
            if (!supervising) return;
            console.error(`lab: the host worker did not start (${String(err)}); trying again`);
          }
        }
        hostRestarts++;
      }
    })();
    cleanups.push(async () => {
      supervising = false;
      await supervisor;
      await guestWorker.kill('TERM');
    });
    const waitHostWorkerRestart = async (after: number, timeoutMs = 300_000) => {
      const deadline = Date.now() + timeoutMs;
      while (hostRestarts <= after) {
        if (Date.now() > deadline)
          throw new Error(`the host worker was not restarted within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    /**
     * An upgrade as an appliance gets one: the next release (this one as `version`) installed
     * with its installer over the running one, then the unit restarted — SIGTERM (the worker
     * drains), and the supervisor starts the unit's command line again, which now runs the new
     * release. Returns the old worker, draining.
     */
    const upgradeHostWorker = async (version: string) => {
      if (!installed) throw new Error('upgradeHostWorker: the host worker runs from the checkout');
      await installInto(await releaseAs(installed.app, version), installed.root, undefined);
      const old = guestWorker;
      expectedDeaths++;
      await old.kill('TERM');
      return old;
    };
    const restartHostWorker = async () => {
      const before = hostRestarts;
      expectedDeaths++;
      await guestWorker.kill('KILL');
      await waitHostWorkerRestart(before);
    };

    let controlProcess: ResultPromise | undefined;
    const spawnControlWorker = async () => {
      if (!db.name) throw new Error('a control worker process needs the database name');
      const p = execa('node', ['--import', 'tsx', 'src/worker/control-main.ts'], {
        cwd: ROOT,
        reject: false,
        env: {
          TEMPORAL_ADDRESS: temporalAddress,
          TASK_QUEUE_PREFIX: prefix,
          DB_NAME: db.name,
          ...(opts.engine ? { ENGINE_DB_NAME: opts.engine.database } : {}),
          CLOUDSTACK_URL: sim.sim.url,
          CLOUDSTACK_API_KEY: sim.sim.apiKey,
          CLOUDSTACK_SECRET_KEY: sim.sim.secretKey,
          FAILPOINTS_DIR: controlFailpoints.dir,
          LOG_LEVEL: 'info',
        },
      });
      let out = '';
      await new Promise<void>((resolve, reject) => {
        p.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (/control worker ready/.test(out)) resolve();
        });
        void p.then((r) => reject(new Error(`control worker exited (${r.exitCode}): ${out}${r.stderr}`)));
      });
      controlProcess = p;
    };
    if (opts.controlWorker === 'process') {
      await spawnControlWorker();
      cleanups.push(async () => {
        controlProcess?.kill('SIGTERM');
        await controlProcess;
      });
    } else {
      const connection = await NativeConnection.connect({
        address: temporalAddress,
      });
      cleanups.push(() => connection.close());
      const worker: Worker = await createControlWorker({
        connection,
        namespace: 'default',
        taskQueuePrefix: prefix,
        failpointsDir: controlFailpoints.dir,
        cloudstack: cs,
        db: db.pool,
        ...(opts.engine ? { engine: opts.engine } : {}),
      });
      const running = worker.run();
      cleanups.push(async () => {
        // A signal may have started its shutdown already (the SDK's own handlers): once is enough.
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running;
      });
    }
    const { client, connection: clientConn } = await connectClient({
      TEMPORAL_ADDRESS: temporalAddress,
      TEMPORAL_NAMESPACE: 'default',
    });
    cleanups.push(() => clientConn.close());
    const volumes = new VolumeLifecycleClient({
      client,
      taskQueuePrefix: prefix,
      correlationTimeoutMs: opts.correlationTimeoutMs ?? 20_000,
    });

    const exec = async (argv: string[]) => {
      const r = await lab.runner.run(argv[0]!, argv.slice(1));
      return r;
    };
    return {
      lab,
      db,
      sim,
      cs,
      volumes,
      temporal: client,
      applianceVmId,
      targetVmId,
      prefix,
      volumeDir,
      hypervisorOverride,
      restartHostWorker,
      upgradeHostWorker,
      hostWorkerVersion: () => installed?.version,
      hostWorkerRestarts: () => hostRestarts,
      waitHostWorkerRestart,
      async waitControlWorkerDead(timeoutMs = 60_000) {
        if (!controlProcess) throw new Error("the control worker runs in process (controlWorker: 'process')");
        let timedOut = false;
        const timer = setTimeout(() => ((timedOut = true), controlProcess?.kill('SIGKILL')), timeoutMs);
        const r = await controlProcess;
        clearTimeout(timer);
        if (timedOut) throw new Error(`the control worker was still alive after ${timeoutMs} ms`);
        if (r.signal !== 'SIGKILL')
          throw new Error(`the control worker ended with ${r.signal ?? r.exitCode}`);
      },
      respawnControlWorker: spawnControlWorker,
      failpointsFor: (activityType) => (activityType.startsWith('host') ? hostFailpoints : controlFailpoints),
      async createVolume(sizeGb = 1) {
        const v = await cs.createVolume({
          name: `vol-${randomBytes(2).toString('hex')}`,
          sizeGb,
          diskOfferingId: sim.offering.id,
          zoneId: sim.zone.id,
        });
        return v.id;
      },
      imagePath: (id) => qmp.imagePath(id),
      async dmTable(name) {
        const r = await exec(['dmsetup', 'table', name]);
        return r.exitCode === 0 ? r.stdout.trim() : null;
      },
      async dmNames() {
        const r = await exec(['dmsetup', 'ls']);
        return /No devices found/.test(r.stdout + r.stderr)
          ? []
          : r.stdout
              .trim()
              .split('\n')
              .map((l) => l.split(/\s+/)[0]!)
              .filter(Boolean)
              .sort();
      },
      async servedExports() {
        const list = await listExports(
          { host: '127.0.0.1', port: lab.guestNbdPort },
          { runner: localRunner },
        );
        return list.map((e) => e.exportName).sort();
      },
      nbdUri: (exportName) => `nbd://127.0.0.1:${lab.guestNbdPort}/${exportName}`,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
