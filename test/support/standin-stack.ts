import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { VolumeLifecycleClient } from '../../src/client/index.js';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import { startSimulator } from '../../harness/cloudstack-sim/index.js';
import { SysfsCorrelator } from '../../src/device/correlation.js';
import { DeviceMapper } from '../../src/device/devicemapper.js';
import { NbdkitDirBackend } from '../../src/nbd/nbdkit-dir.js';
import { connectClient } from '../../src/temporal/connection.js';
import { localRunner } from '../../src/command/runner.js';
import { Failpoints } from '../../src/worker/failpoints.js';
import { createControlWorker, createHostWorker } from '../../src/worker/workers.js';
import { freshDatabase } from './db.js';
import { freshEngineDatabase, type EngineDb } from './engine-db.js';
import { MemoryDmRunner, SysfsTreeHypervisor } from './host-stand-in.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** One appliance: a VM in the simulator, its sysfs tree, stand-in dm and export directory. */
export interface StandinAppliance {
  id: string;
  dm: MemoryDmRunner;
  exports: NbdkitDirBackend;
}

/**
 * The product with the appliance's kernel stood in (test/support/host-stand-in.ts): real Temporal,
 * MariaDB, CloudStack simulator and workers; disks appear in a prepared sysfs tree and dmsetup
 * answers from memory. For what the lab cannot do at speed: hundreds of disks, many faults.
 * The control worker runs in this process or as a process of its own (to be killed);
 * host workers run here and restart over the same stand-in kernel state, as a real one's would.
 */
export async function startStandinStack(
  tag: string,
  opts: {
    appliances?: number;
    controlWorker?: 'in-process' | 'process';
    /** The CloudStack client's per-request timeout (in-process control worker). */
    requestTimeoutMs?: number;
    jobDurationMs?: number;
    dbPoolSize?: number;
    /** Data disks a VM may have (CloudStack/KVM's default 32; raised by an operator). */
    maxDataVolumes?: number;
    /** An engine database beside ours (ENGINE_DB_NAME), optionally with the old daemon's triggers. */
    engineDb?: { oldTriggers?: boolean };
  } = {},
) {
  const cleanups: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch((e) => console.error('cleanup:', e));
  };
  try {
    const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
    const db = await freshDatabase(tag);
    cleanups.push(() => db.close());
    let engineDb: EngineDb | undefined;
    if (opts.engineDb) {
      engineDb = await freshEngineDatabase(tag, opts.engineDb);
      cleanups.push(() => engineDb!.close());
    }
    const tmp = await mkdtemp(path.join(os.tmpdir(), `vl-${tag}-`));
    cleanups.push(() => rm(tmp, { recursive: true, force: true }));
    const hypervisors = new Map<string, SysfsTreeHypervisor>();
    const sim = await startSimulator({
      jobDurationMs: opts.jobDurationMs ?? 5,
      hypervisorFor: (vm) => hypervisors.get(vm),
    });
    cleanups.push(() => sim.sim.close());
    if (opts.maxDataVolumes) sim.sim.state.maxDataVolumes = opts.maxDataVolumes;
    const cs = new CloudStackClient({
      url: sim.sim.url,
      apiKey: sim.sim.apiKey,
      secretKey: sim.sim.secretKey,
      pollInitialMs: 5,
      pollMaxMs: 100,
      ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
    });
    const prefix = `t-${tag}-${randomBytes(3).toString('hex')}`;
    const failpoints = new Failpoints(path.join(tmp, 'failpoints'), localRunner);
    await failpoints.init();
    const connection = await NativeConnection.connect({ address });
    cleanups.push(() => connection.close());

    // --- the control worker --------------------------------------------------------------------
    let stopControl: () => Promise<void>;
    let control: ResultPromise | undefined;
    const spawnControl = async () => {
      const p = execa('node', ['--import', 'tsx', 'src/worker/control-main.ts'], {
        cwd: ROOT,
        reject: false,
        env: {
          TEMPORAL_ADDRESS: address,
          TASK_QUEUE_PREFIX: prefix,
          DB_NAME: db.name,
          DB_POOL_SIZE: String(opts.dbPoolSize ?? 20),
          CLOUDSTACK_URL: sim.sim.url,
          CLOUDSTACK_API_KEY: sim.sim.apiKey,
          CLOUDSTACK_SECRET_KEY: sim.sim.secretKey,
          FAILPOINTS_DIR: failpoints.dir,
          ...(engineDb ? { ENGINE_DB_NAME: engineDb.name } : {}),
          LOG_LEVEL: 'info', // its "control worker ready" line is how we know it polls
        },
      });
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`control worker not ready after 120 s: ${out}`)),
          120_000,
        );
        p.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (!/control worker ready/.test(out)) return;
          clearTimeout(timer);
          resolve();
        });
        void p.then((r) => reject(new Error(`control worker exited (${r.exitCode}): ${out}${r.stderr}`)));
      });
      control = p;
    };
    if (opts.controlWorker === 'process') {
      await spawnControl();
      stopControl = async () => {
        control?.kill('SIGTERM');
        await control;
      };
    } else {
      const w = await createControlWorker({
        connection,
        namespace: 'default',
        taskQueuePrefix: prefix,
        cloudstack: cs,
        db: db.pool,
        ...(engineDb ? { engine: engineDb.rows } : {}),
        maxConcurrent: 300,
        failpointsDir: failpoints.dir,
      });
      const running = w.run();
      stopControl = async () => {
        w.shutdown();
        await running;
      };
    }
    cleanups.push(() => stopControl());

    // --- appliances and their host workers -----------------------------------------------------
    const appliances: (StandinAppliance & { deps: Parameters<typeof createHostWorker>[0] })[] = [];
    const hostWorkers = new Map<string, { worker: Worker; running: Promise<void> }>();
    const startHostWorker = async (a: (typeof appliances)[number]) => {
      const worker = await createHostWorker(a.deps);
      hostWorkers.set(a.id, { worker, running: worker.run() });
    };
    const stopHostWorkers = async () => {
      for (const [id, h] of hostWorkers) {
        h.worker.shutdown();
        await h.running;
        hostWorkers.delete(id);
      }
    };
    cleanups.push(stopHostWorkers);
    for (let i = 0; i < (opts.appliances ?? 1); i++) {
      const id = randomUUID();
      sim.sim.state.addVm({ name: `appliance-${i}`, zoneid: sim.zone.id, id });
      const dir = path.join(tmp, `appliance-${i}`);
      const sys = path.join(dir, 'sys');
      await mkdir(path.join(sys, 'block'), { recursive: true });
      await mkdir(path.join(dir, 'dev'), { recursive: true });
      hypervisors.set(id, new SysfsTreeHypervisor(sys));
      const dm = new MemoryDmRunner(sys);
      const exports = new NbdkitDirBackend({
        exportsDir: path.join(dir, 'exports'),
        host: '127.0.0.1',
        port: 10809,
      });
      const a = {
        id,
        dm,
        exports,
        deps: {
          connection,
          namespace: 'default',
          taskQueuePrefix: prefix,
          applianceVmId: id,
          correlator: new SysfsCorrelator({ sysfsRoot: sys, devRoot: path.join(dir, 'dev'), pollMs: 10 }),
          dm: new DeviceMapper({ runner: dm }),
          exports,
        },
      };
      appliances.push(a);
      await startHostWorker(a);
    }
    const targetVmId = randomUUID();
    sim.sim.state.addVm({ name: 'target', zoneid: sim.zone.id, id: targetVmId });

    const { client, connection: clientConn } = await connectClient({
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: 'default',
    });
    cleanups.push(() => clientConn.close());
    const volumes = new VolumeLifecycleClient({
      client,
      taskQueuePrefix: prefix,
      correlationTimeoutMs: 20_000,
    });

    return {
      db,
      /** The engine's database, when asked for (opts.engineDb). */
      engineDb,
      sim,
      cs,
      volumes,
      temporal: client,
      prefix,
      targetVmId,
      /** Failpoints of the control worker (control activities). */
      failpoints,
      appliances: appliances as StandinAppliance[],
      applianceVmId: appliances[0]!.id,
      async createVolume(sizeGb = 1, name = `vol-${randomBytes(2).toString('hex')}`) {
        const v = await cs.createVolume({
          name,
          sizeGb,
          diskOfferingId: sim.offering.id,
          zoneId: sim.zone.id,
        });
        return v.id;
      },
      /** Stop every host worker (letting activities in flight finish) and start new ones. */
      async restartHostWorkers() {
        await stopHostWorkers();
        for (const a of appliances) await startHostWorker(a);
      },
      /** Kill the control worker process with `signal` and start a new one. */
      async restartControlWorker(signal: 'SIGKILL' | 'SIGTERM') {
        if (!control) throw new Error("the control worker runs in process (controlWorker: 'process')");
        control.kill(signal);
        const r = await control;
        if (signal === 'SIGKILL' && r.signal !== 'SIGKILL')
          throw new Error(`the control worker ended with ${r.signal ?? r.exitCode}`);
        await spawnControl();
      },
      /** Wait until the control worker process has died of SIGKILL (a crash-after failpoint). */
      async waitControlWorkerDead(timeoutMs = 60_000) {
        if (!control) throw new Error("the control worker runs in process (controlWorker: 'process')");
        const timer = setTimeout(() => control?.kill('SIGKILL'), timeoutMs);
        const r = await control;
        clearTimeout(timer);
        if (r.signal !== 'SIGKILL')
          throw new Error(`the control worker ended with ${r.signal ?? r.exitCode}`);
      },
      respawnControlWorker: () => spawnControl(),
      failpointsFor: () => failpoints,
      async dmTable(name: string, applianceVmId = appliances[0]!.id) {
        const a = appliances.find((x) => x.id === applianceVmId)!;
        return a.dm.devices.get(name)?.table.trim() ?? null;
      },
      /** What the appliance's export directory offers (no NBD server runs over stand-in devices). */
      async servedExports(applianceVmId = appliances[0]!.id) {
        const a = appliances.find((x) => x.id === applianceVmId)!;
        return (await a.exports.listConfigured()).map((e) => e.exportName).sort();
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

export type StandinStack = Awaited<ReturnType<typeof startStandinStack>>;
