// The release, end to end on this machine: scripts/build makes the artifact; its installer puts
// it into a scratch root (install --root); every unit passes `systemd-analyze verify` there; the
// host worker is started from the installed files exactly as its unit says (ExecStart line,
// Environment= and EnvironmentFile=, on a clean environment; there is no systemd in this
// container to start it), polls its queue reporting the release's build id, runs activities
// for a workflow, and drains on SIGTERM (a step in flight finishes); upgrade, rollback material
// and uninstall behave. It prints the artifact's size and the build, unpack and install times
// (start-up, built against tsx: bench/startup.ts).
//
// RELEASE_ARTIFACT=<tarball> skips the build (to iterate on the installer); RELEASE_BUILD_DIR
// (scripts/test sets it) shares one build between this file and the lab.
import { NativeConnection, Worker } from '@temporalio/worker';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  cp,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  writeFile,
  lstat,
  readlink,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { parseEnvFile } from '../../src/config/env-file.js';
import { fromUnit as unitCommand, releaseArtifact, releaseAs } from '../../harness/lab/release.js';
import { loadConfig } from '../../src/config/index.js';
import { dropDatabase } from '../../src/db/pool.js';
import { connectClient } from '../../src/temporal/connection.js';
import { hostQueue } from '../../src/temporal/task-queues.js';
import { pollFor, startService, type Service } from './process-helpers.js';

const TEMPORAL_ADDRESS = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
const UNITS = [
  'volume-lifecycle-host-worker.service',
  'volume-lifecycle-nbdkit.service',
  'volume-lifecycle-control-worker.service',
  'volume-lifecycle-api.service',
];

let work: string;
let artifact: string;
let app: string; // the unpacked release
let sroot: string; // the scratch root it is installed into
let version: string;
const prefix = `rel-${randomUUID().slice(0, 8)}`;
const appliance = randomUUID();
const queue = hostQueue(prefix, appliance);
const services: Service[] = [];
let temporal: Awaited<ReturnType<typeof connectClient>>;
const figures: Record<string, string> = {};

const ms = (t0: number) => Date.now() - t0;
/** A path of the installed system, inside the scratch root. */
const inRoot = (p: string) => path.join(sroot, p);

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'vl-release-'));
  temporal = await connectClient({ TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE: 'default' });
  // One build per test run, shared with the lab (harness/lab/release.ts).
  const built = await releaseArtifact();
  artifact = built.artifact;
  if (built.builtMs !== undefined)
    figures['build (tsc, npm ci --omit=dev, bundle, tarball)'] = `${(built.builtMs / 1000).toFixed(1)} s`;
});

after(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await temporal?.connection.close();
  console.log(
    `release figures:\n${Object.entries(figures)
      .map(([k, v]) => `  ${k}: ${v}`)
      .join('\n')}`,
  );
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the artifact', () => {
  test('one tarball, one top directory, production dependencies only, versioned binaries', async () => {
    assert.match(path.basename(artifact), /^volume-lifecycle-[A-Za-z0-9.+~_-]+-linux-(x64|arm64)\.tar\.gz$/);
    const size = (await stat(artifact)).size;
    figures['artifact size'] = `${(size / 1024 / 1024).toFixed(1)} MiB`;
    const listing = (await execa('tar', ['-tzf', artifact])).stdout.split('\n');
    const tops = new Set(listing.map((l) => l.split('/')[0]));
    assert.equal(tops.size, 1, `one top directory: ${[...tops].join(' ')}`);
    const top = [...tops][0]!;

    const unpacked = path.join(work, 'unpacked');
    await mkdir(unpacked);
    const t0 = Date.now();
    await execa('tar', ['-xzf', artifact, '-C', unpacked]);
    figures['unpack'] = `${(ms(t0) / 1000).toFixed(1)} s`;
    app = path.join(unpacked, top);
    const info = JSON.parse(await readFile(path.join(app, 'build-info.json'), 'utf8')) as {
      version: string;
      buildId: string;
    };
    version = info.version;
    assert.equal(top, `volume-lifecycle-${version}`);
    assert.equal(info.buildId, version);
    figures['unpacked size'] = (await execa('du', ['-sh', app])).stdout.split('\t')[0]!;

    await assert.rejects(stat(path.join(app, 'node_modules/tsx')), 'no tsx in the release');
    await assert.rejects(stat(path.join(app, 'node_modules/typescript')), 'no compiler in the release');
    assert.ok(
      (await stat(path.join(app, 'workflow-bundle.js'))).size > 100_000,
      'the workflow bundle is prebuilt',
    );
    assert.deepEqual(await readdir(path.join(app, 'node_modules/@temporalio/core-bridge/releases')), [
      process.arch === 'x64' ? 'x86_64-unknown-linux-gnu' : 'aarch64-unknown-linux-gnu',
    ]);
    const node = path.join(app, 'node/bin/node');
    assert.match(
      (await execa(path.join(app, 'bin/volume-lifecycle'), ['--version'])).stdout,
      new RegExp(`^volume-lifecycle ${version.replace(/[.+~]/g, '\\$&')}`),
    );
    assert.match(
      (
        await execa(path.join(app, 'bin/volumectl'), ['--version'], {
          env: { VOLUMECTL_ENV_FILE: '/dev/null' },
        })
      ).stdout,
      /^volumectl /,
    );
    assert.match(
      (await execa(node, [path.join(app, 'src/cli/service.js'), 'host-worker', '--version'])).stdout,
      /^volume-lifecycle-host-worker /,
    );
    assert.match(
      (await execa(node, [path.join(app, 'src/cli/service.js'), 'control-worker', '--version'])).stdout,
      /^volume-lifecycle-control-worker /,
    );
  });
});

describe('installed into a scratch root', () => {
  const sysfs = () => path.join(work, 'sys');
  const exportsDir = () => inRoot('run/volume-lifecycle/exports');
  /** A disk appearing in the stand-in sysfs tree, as a hot-plug would show it. */
  const plugDisk = async (name: string, serial: string, sectors = 4096) => {
    await mkdir(path.join(sysfs(), 'block', name), { recursive: true });
    await writeFile(path.join(sysfs(), 'block', name, 'serial'), `${serial}\n`);
    await writeFile(path.join(sysfs(), 'block', name, 'size'), `${sectors}\n`);
  };

  test('install --root: release, current link, units, env files from the templates with --set', async () => {
    sroot = path.join(work, 'root');
    await mkdir(sroot);
    await plugDisk('vdb', 'root-disk-serial', 2048);
    const t0 = Date.now();
    const r = await execa(
      path.join(app, 'install'),
      [
        '--root',
        sroot,
        '--role',
        'all',
        '--set',
        `APPLIANCE_VM_ID=${appliance}`,
        '--set',
        `TEMPORAL_ADDRESS=${TEMPORAL_ADDRESS}`,
        '--set',
        `TASK_QUEUE_PREFIX=${prefix}`,
        // The worker runs directly here, not in the root: paths of this machine.
        '--set',
        `NBD_EXPORTS_DIR=${exportsDir()}`,
        '--set',
        `SYSFS_ROOT=${sysfs()}`,
        // A value with characters sed or awk -v would mangle is written verbatim.
        '--set',
        'NBD_URI_HOST=a&b\\c|d',
      ],
      { all: true, reject: false },
    );
    figures['install --root (copy, env files, units)'] = `${(ms(t0) / 1000).toFixed(1)} s`;
    assert.equal(r.exitCode, 0, r.all);
    assert.equal(await readlink(inRoot('opt/volume-lifecycle/current')), `releases/${version}`);
    for (const u of UNITS) await stat(inRoot(`usr/local/lib/systemd/system/${u}`));
    assert.equal(
      path.resolve(
        path.dirname(inRoot('usr/local/bin/volumectl')),
        await readlink(inRoot('usr/local/bin/volumectl')),
      ),
      inRoot('opt/volume-lifecycle/current/bin/volumectl'),
    );
    const env = parseEnvFile(await readFile(inRoot('etc/volume-lifecycle/host-worker.env'), 'utf8'));
    assert.equal(env.APPLIANCE_VM_ID, appliance, '--set fills in a template setting');
    assert.equal(env.NBD_MANAGE_SERVER, 'false', 'nbdkit has its own unit');
    assert.equal(env.SYSFS_ROOT, sysfs(), '--set appends a setting the template lacks');
    assert.equal(env.NBD_URI_HOST, 'a&b\\c|d', '--set writes the value verbatim');
    for (const f of ['host-worker.env', 'control-worker.env', 'api.env']) {
      const st = await stat(inRoot(`etc/volume-lifecycle/${f}`));
      assert.equal(st.mode & 0o777, 0o640, `${f} is 0640`);
    }
    const passwd = await readFile(inRoot('etc/passwd'), 'utf8');
    const uid = /^volume-lifecycle:x:(\d+):(\d+):/m.exec(passwd);
    assert.ok(uid, 'the service user exists in the root (systemd-sysusers --root)');
    assert.equal((await stat(inRoot('etc/volume-lifecycle/control-worker.env'))).gid, Number(uid[2]));
    assert.equal((await stat(inRoot('etc/volume-lifecycle/secrets'))).mode & 0o777, 0o750);
  });

  test('every unit passes systemd-analyze verify, and is sandboxed', async () => {
    // verify --root resolves ExecStart and the units it depends on inside the root: give it
    // systemd's own units and the nbdkit binary apt would have installed.
    await cp('/usr/lib/systemd/system', inRoot('usr/lib/systemd/system'), {
      recursive: true,
      verbatimSymlinks: true,
    });
    await mkdir(inRoot('usr/bin'), { recursive: true });
    await cp('/usr/bin/nbdkit', inRoot('usr/bin/nbdkit'));
    for (const u of UNITS) {
      const r = await execa('systemd-analyze', ['verify', `--root=${sroot}`, u], {
        reject: false,
        all: true,
      });
      assert.equal(r.exitCode, 0, `${u}: ${r.all}`);
      // verify reports unknown keys and bad values as warnings with exit 0: none allowed.
      assert.equal(r.all, '', `${u} verifies without a warning`);
      const s = await execa('systemd-analyze', ['security', '--offline=yes', `--root=${sroot}`, u], {
        reject: false,
      });
      const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(s.stdout)?.[1]);
      figures[`systemd-analyze security ${u}`] = `${exposure}`;
      // 0 = locked down … 10 = nothing; "OK" ends at 5. The host worker holds root's device powers.
      assert.ok(exposure <= (u.includes('host-worker') ? 4 : 2.5), `${u} exposure ${exposure}`);
    }
    // A broken unit does fail: the check is not vacuous.
    const broken = inRoot('usr/local/lib/systemd/system/volume-lifecycle-broken.service');
    await writeFile(
      broken,
      '[Service]\nExecStart=/opt/volume-lifecycle/current/bin/missing\nRestartt=always\n',
    );
    const r = await execa(
      'systemd-analyze',
      ['verify', `--root=${sroot}`, 'volume-lifecycle-broken.service'],
      { reject: false, all: true },
    );
    assert.match(r.all, /Unknown key|not executable/);
    await rm(broken);
  });

  /** The unit's command line and environment, as systemd would give them. */
  const fromUnit = (unit: string) => unitCommand(sroot, unit);

  const startInstalledHostWorker = async () => {
    const { argv, env } = await fromUnit('volume-lifecycle-host-worker.service');
    const s = startService(argv[0]!, argv.slice(1), { env });
    services.push(s);
    return s;
  };

  /** A workflow worker of this test (release-workflows.ts), whose workflows call the host queue. */
  async function withTestWorkflows(name: string, body: (wfQueue: string) => Promise<void>) {
    const connection = await NativeConnection.connect({ address: TEMPORAL_ADDRESS });
    const wfQueue = `${prefix}-${name}`;
    const wf = await Worker.create({
      connection,
      taskQueue: wfQueue,
      workflowsPath: fileURLToPath(new URL('./release-workflows.ts', import.meta.url)),
    });
    const running = wf.run();
    try {
      await body(wfQueue);
    } finally {
      wf.shutdown();
      await running;
      await connection.close();
    }
  }

  /** Start a test workflow whose first step waits on the host worker for the disk `serial`. */
  async function startWaitingForDisk(
    wfQueue: string,
    workflow: 'correlateOn' | 'correlateThenListOn',
    id: string,
    serial: string,
  ) {
    const h = await temporal.client.workflow.start(workflow, {
      taskQueue: wfQueue,
      workflowId: `${prefix}-${id}`,
      args: [queue, serial],
      workflowExecutionTimeout: '2 minutes',
    });
    // PendingActivityState STARTED = 2: the worker holds the step.
    await pollFor(
      `the first step of ${workflow} is running`,
      async () => ((await h.describe()).raw.pendingActivities?.[0]?.state === 2 ? true : undefined),
      30_000,
    );
    return h;
  }

  async function pollers() {
    const r = await temporal.connection.workflowService.describeTaskQueue({
      namespace: 'default',
      taskQueue: { name: queue, kind: 1 },
      taskQueueType: 2, // activity
    });
    return r.pollers.length ? r.pollers : undefined;
  }

  test('the host worker started from its unit polls with the build id, runs activities, drains on SIGTERM', async () => {
    await mkdir(exportsDir(), { recursive: true }); // RuntimeDirectory= would make it
    const t0 = Date.now();
    const host = await startInstalledHostWorker();
    const ready = await host.waitForLog('host worker ready', 60_000);
    figures['installed host worker: spawn → ready'] = `${ms(t0)} ms`;
    assert.equal(ready.version, version);
    assert.equal(ready.oneFile, true, 'the unit starts the one-file host worker');
    const [poller] = await pollFor('a poller on the host queue', pollers, 30_000);
    assert.equal(
      poller?.deploymentOptions?.buildId,
      version,
      'the build id reported to Temporal is the version',
    );
    assert.match(
      String(poller?.identity),
      new RegExp(`volume-lifecycle/${version.replace(/[.+~]/g, '\\$&')}$`),
    );
    assert.ok(
      host.logs.every((l) => typeof l.msg === 'string'),
      'every line on stdout/stderr is pino JSON',
    );

    // doctor from the installed files, against the running worker.
    const doctor = await execa(
      inRoot('usr/local/bin/volumectl'),
      ['doctor', '--env-file', inRoot('etc/volume-lifecycle/host-worker.env')],
      { reject: false, all: true, env: { VOLUMECTL_ENV_FILE: '/dev/null', PATH: process.env.PATH } },
    );
    for (const ok of [
      'configuration',
      'Temporal reachable',
      'Temporal namespace',
      'search attributes',
      'host queue polled',
      'exports dir',
    ])
      assert.match(doctor.stdout, new RegExp(`^  OK +${ok}:`, 'm'), `doctor: ${ok}\n${doctor.all}`);

    // Activities for a workflow: a workflow worker of this test calls the host queue.
    await withTestWorkflows('release-wf', async (wfQueue) => {
      const devices = await temporal.client.workflow.execute('listDevicesOn', {
        taskQueue: wfQueue,
        workflowId: `${prefix}-list`,
        args: [queue],
        workflowExecutionTimeout: '2 minutes',
      });
      assert.deepEqual(devices, ['vdb'], 'hostListDevices ran on the installed worker, over SYSFS_ROOT');

      // Drain: a step waiting for its disk when SIGTERM comes still finishes (one attempt).
      const serial = `drain-${randomUUID().slice(0, 8)}`;
      const h = await startWaitingForDisk(wfQueue, 'correlateOn', 'drain', serial);
      host.proc.kill('SIGTERM');
      await host.waitForLog('host worker draining', 10_000);
      await plugDisk('vdc', serial);
      const r = (await h.result()) as { devicePath: string };
      assert.equal(r.devicePath, '/dev/vdc', 'the draining worker finished the step in flight');
      assert.equal(await host.exited, 0, `clean exit after draining\n${host.output.join('\n')}`);
      assert.ok(host.logs.some((l) => l.msg === 'host worker stopped'));
    });
  });

  test('the installed release runs the database migrations (volume-lifecycle migrate)', async () => {
    const name = `vl_test_release_${randomUUID().slice(0, 6).replace(/-/g, '')}`;
    const envFile = path.join(work, 'migrate.env');
    await writeFile(
      envFile,
      [
        `DB_HOST=${process.env.DB_HOST ?? '127.0.0.1'}`,
        `DB_PORT=${process.env.DB_PORT ?? '3306'}`,
        `DB_USER=${process.env.DB_USER ?? 'root'}`,
        `DB_PASSWORD=${process.env.DB_PASSWORD ?? ''}`,
        `DB_NAME=${name}`,
      ].join('\n'),
    );
    const bin = inRoot('usr/local/bin/volume-lifecycle');
    const clean = { PATH: process.env.PATH };
    try {
      const up = await execa(bin, ['--env-file', envFile, 'migrate', 'up'], {
        env: clean,
        extendEnv: false,
        reject: false,
        all: true,
      });
      assert.equal(up.exitCode, 0, up.all);
      assert.match(up.stdout, /^applied: 0001_initial/);
      const status = await execa(bin, ['--env-file', envFile, 'migrate', 'status'], {
        env: clean,
        extendEnv: false,
        reject: false,
        all: true,
      });
      assert.equal(status.exitCode, 0, status.all);
      assert.match(status.stdout, /^pending: -$/m);
    } finally {
      await dropDatabase({
        ...loadConfig({}),
        DB_HOST: process.env.DB_HOST ?? '127.0.0.1',
        DB_PORT: Number(process.env.DB_PORT ?? 3306),
        DB_USER: process.env.DB_USER ?? 'root',
        DB_PASSWORD: process.env.DB_PASSWORD ?? '',
        DB_NAME: name,
      });
    }
  });

  test('upgrade keeps edited env files and the previous release; uninstall keeps /etc unless --purge', async () => {
    const envFile = inRoot('etc/volume-lifecycle/host-worker.env');
    const edited = `${await readFile(envFile, 'utf8')}\n# edited by the operator\nLOG_LEVEL=debug\n`;
    await writeFile(envFile, edited);
    // An older release left from before (the installer keeps only this one and the previous).
    const stale = inRoot('opt/volume-lifecycle/releases/0.0.1');
    await mkdir(stale);
    const v2 = `${version}.up2`;
    const v2dir = await releaseAs(app, v2);

    // A step in flight on the running release's worker when the upgrade comes: that worker
    // finishes it while draining (what systemd's restart gives it: SIGTERM, then the grace); the
    // new release's worker, started from the same unit, runs the step after it.
    const old = await startInstalledHostWorker();
    assert.equal((await old.waitForLog('host worker ready', 60_000)).version, version);
    let upgradeOutput: string | undefined;
    await withTestWorkflows('upgrade-wf', async (wfQueue) => {
      const serial = `upgrade-${randomUUID().slice(0, 8)}`;
      const h = await startWaitingForDisk(wfQueue, 'correlateThenListOn', 'upgrade', serial);
      const t0 = Date.now();
      const r = await execa(path.join(v2dir, 'install'), ['--root', sroot], { reject: false, all: true });
      assert.equal(r.exitCode, 0, r.all);
      upgradeOutput = r.all;
      figures['upgrade --root (copy, switch)'] = `${(ms(t0) / 1000).toFixed(1)} s`;
      old.proc.kill('SIGTERM');
      await old.waitForLog('host worker draining', 10_000);
      await plugDisk('vdd', serial);
      assert.equal(await old.exited, 0, `the old worker drained and exited\n${old.output.join('\n')}`);
      const next = await startInstalledHostWorker();
      assert.equal((await next.waitForLog('host worker ready', 60_000)).version, v2);
      const result = (await h.result()) as { devicePath: string; devices: string[] };
      assert.equal(result.devicePath, '/dev/vdd', 'the step in flight finished on the old release');
      assert.ok(result.devices.includes('vdd'), 'the next step ran');
      const ran = (await h.fetchHistory()).events
        ?.map((e) => e.activityTaskStartedEventAttributes?.identity)
        .filter((i): i is string => !!i);
      assert.equal(ran?.length, 2, 'each step ran once: nothing lost, nothing run twice');
      assert.ok(ran[0]!.endsWith(`/${version}`), `first step on ${version}: ${ran[0]}`);
      assert.ok(ran[1]!.endsWith(`/${v2}`), `next step on ${v2}: ${ran[1]}`);
      next.proc.kill('SIGTERM');
      assert.equal(await next.exited, 0);
    });
    assert.equal(await readlink(inRoot('opt/volume-lifecycle/current')), `releases/${v2}`);
    assert.equal(await readFile(envFile, 'utf8'), edited, 'an edited env file is never overwritten');
    assert.ok(upgradeOutput !== undefined);
    assert.match(upgradeOutput, /kept \/etc\/volume-lifecycle\/host-worker.env/);
    assert.match(upgradeOutput, new RegExp(`upgrading ${version.replace(/[.+~]/g, '\\$&')} -> `));
    assert.deepEqual(
      (await readdir(inRoot('opt/volume-lifecycle/releases'))).sort(),
      [version, v2].sort(),
      'this release and the previous one are kept, older ones removed',
    );
    assert.equal(
      await readFile(inRoot('opt/volume-lifecycle/role'), 'utf8'),
      'all\n',
      'the role is remembered',
    );

    const un = await execa(inRoot('opt/volume-lifecycle/current/install'), ['--uninstall', '--root', sroot], {
      reject: false,
      all: true,
    });
    assert.equal(un.exitCode, 0, un.all);
    await assert.rejects(lstat(inRoot('opt/volume-lifecycle')));
    await assert.rejects(lstat(inRoot('usr/local/bin/volumectl')));
    for (const u of UNITS) await assert.rejects(lstat(inRoot(`usr/local/lib/systemd/system/${u}`)));
    assert.equal(await readFile(envFile, 'utf8'), edited, 'uninstall keeps the settings');
    const purge = await execa(path.join(app, 'install'), ['--uninstall', '--purge', '--root', sroot], {
      reject: false,
      all: true,
    });
    assert.equal(purge.exitCode, 0, purge.all);
    await assert.rejects(lstat(inRoot('etc/volume-lifecycle')));
  });
});
