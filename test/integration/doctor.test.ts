// `volumectl doctor` against real parts: the Temporal dev server, MariaDB, the CloudStack
// simulator; each misconfiguration is reported in plain words naming what to change.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { runDoctor, type Check } from '../../src/cli/doctor.js';
import { startSimulator, type RunningSimulator } from '../../harness/cloudstack-sim/index.js';
import { freshDatabase } from '../support/db.js';
import { freshEngineDatabase } from '../support/engine-db.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TEMPORAL_ADDRESS = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
let sim: RunningSimulator;
let db: Awaited<ReturnType<typeof freshDatabase>>;
let dir: string;
const appliance = randomUUID();

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vl-doctor-'));
  sim = await startSimulator({ applianceVmId: appliance });
  db = await freshDatabase('doctor');
});
after(async () => {
  await sim?.close();
  await db?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const controlEnv = async (over: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> => {
  const secret = path.join(dir, 'cs-secret');
  await writeFile(secret, `${sim.secretKey}\n`);
  await chmod(secret, 0o640);
  return {
    PATH: process.env.PATH,
    TEMPORAL_ADDRESS,
    TASK_QUEUE_PREFIX: `doctor-${randomUUID().slice(0, 8)}`,
    DB_HOST: process.env.DB_HOST ?? '127.0.0.1',
    DB_PORT: process.env.DB_PORT ?? '3306',
    DB_USER: process.env.DB_USER ?? 'root',
    DB_PASSWORD: process.env.DB_PASSWORD ?? '',
    DB_NAME: db.name,
    CLOUDSTACK_URL: sim.url,
    CLOUDSTACK_API_KEY: sim.apiKey,
    CLOUDSTACK_SECRET_KEY_FILE: secret,
    APPLIANCE_VM_ID: appliance,
    ...over,
  };
};
const find = (checks: Check[], name: string) => {
  const c = checks.filter((x) => x.check === name);
  assert.ok(
    c.length,
    `a "${name}" check in:\n${checks.map((x) => `${x.status} ${x.check}: ${x.detail}`).join('\n')}`,
  );
  return c;
};
const status = (checks: Check[], name: string) => find(checks, name).map((c) => c.status);
const detail = (checks: Check[], name: string) =>
  find(checks, name)
    .map((c) => c.detail)
    .join('\n');

describe('control host', () => {
  test('a good configuration: everything ok but the control queue, which no worker polls', async () => {
    const checks = await runDoctor(await controlEnv(), 'control');
    for (const ok of [
      'configuration',
      'Temporal reachable',
      'Temporal namespace',
      'search attributes',
      'database migrated',
      'CloudStack keys',
      'appliance known',
    ])
      assert.deepEqual(status(checks, ok), ['ok'], detail(checks, ok));
    assert.match(
      detail(checks, 'appliance known'),
      new RegExp(`appliance ${appliance} is CloudStack VM "migration-appliance"`),
    );
    assert.deepEqual(status(checks, 'control queue polled'), ['fail']);
    assert.match(
      detail(checks, 'control queue polled'),
      /no worker polls doctor-\w+-control: .*systemctl status volume-lifecycle-control-worker/,
    );
    assert.deepEqual(status(checks, `appliance ${appliance} polled`), ['warn']);
  });

  test('a wrong CloudStack secret, an unknown appliance, an unmigrated database, a missing namespace', async () => {
    const wrong = path.join(dir, 'wrong-secret');
    await writeFile(wrong, 'not-the-secret\n');
    const bad = await runDoctor(
      await controlEnv({ CLOUDSTACK_SECRET_KEY_FILE: wrong, DB_NAME: 'vl_doctor_never_created' }),
      'control',
    );
    assert.match(
      detail(bad, 'CloudStack keys'),
      /refused our keys \(CLOUDSTACK_API_KEY, CLOUDSTACK_SECRET_KEY \/ CLOUDSTACK_SECRET_KEY_FILE\)/,
    );
    assert.match(
      detail(bad, 'database migrated'),
      /database vl_doctor_never_created does not exist .*: run volume-lifecycle migrate/,
    );

    const unknown = randomUUID();
    const other = await runDoctor(
      await controlEnv({ APPLIANCE_VM_ID: unknown, TEMPORAL_NAMESPACE: 'no-such-namespace' }),
      'control',
    );
    assert.match(
      detail(other, 'appliance known'),
      new RegExp(`CloudStack does not know appliance ${unknown}: check APPLIANCE_VM_ID`),
    );
    assert.match(
      detail(other, 'Temporal namespace'),
      /namespace "no-such-namespace" does not exist .*temporal operator namespace create --namespace no-such-namespace/,
    );
  });

  test('Temporal not there, a bad setting, a world-readable secret', async () => {
    const down = await runDoctor(await controlEnv({ TEMPORAL_ADDRESS: '127.0.0.1:1' }), 'control');
    assert.match(detail(down, 'Temporal reachable'), /nothing listens at 127\.0\.0\.1:1/);
    const badCfg = await runDoctor(await controlEnv({ DB_PORT: 'seventy' }), 'control');
    assert.deepEqual(status(badCfg, 'configuration'), ['fail']);
    assert.match(detail(badCfg, 'configuration'), /^DB_PORT: /);
    const open = path.join(dir, 'open-secret');
    await writeFile(open, `${sim.secretKey}\n`);
    await chmod(open, 0o644);
    const leaky = await runDoctor(await controlEnv({ CLOUDSTACK_SECRET_KEY_FILE: open }), 'control');
    assert.match(
      detail(leaky, 'secret files'),
      /CLOUDSTACK_SECRET_KEY_FILE .* is readable by every user \(mode 644\)/,
    );
  });
});

describe('appliance', () => {
  test('tools, exports dir, NBD server, host queue: each said in plain words', async () => {
    const exportsDir = path.join(dir, 'exports');
    await mkdir(exportsDir);
    const checks = await runDoctor(
      {
        PATH: process.env.PATH,
        TEMPORAL_ADDRESS,
        APPLIANCE_VM_ID: appliance,
        TASK_QUEUE_PREFIX: `doctor-${randomUUID().slice(0, 8)}`,
        NBD_EXPORTS_DIR: exportsDir,
        NBD_MANAGE_SERVER: 'false',
        NBD_PORT: '1',
      },
      'host',
    );
    assert.deepEqual(status(checks, 'exports dir'), ['ok']);
    assert.deepEqual(status(checks, 'nbdkit'), ['ok'], 'nbdkit is installed here');
    // This container has dmsetup but no device-mapper in its kernel: said so, with the remedy.
    const dm = find(checks, 'dmsetup')[0]!;
    if (dm.status === 'fail')
      assert.match(dm.detail, /kernel's device-mapper does not answer .*modprobe dm_mod/);
    assert.match(
      detail(checks, 'NBD server'),
      /nothing serves NBD at 127\.0\.0\.1:1 .*systemctl status volume-lifecycle-nbdkit/,
    );
    assert.match(
      detail(checks, 'host queue polled'),
      /no worker polls doctor-\w+-host-.*systemctl status volume-lifecycle-host-worker/,
    );

    const missing = await runDoctor(
      {
        PATH: process.env.PATH,
        TEMPORAL_ADDRESS,
        APPLIANCE_VM_ID: appliance,
        NBD_EXPORTS_DIR: path.join(dir, 'nope'),
      },
      'host',
    );
    assert.match(
      detail(missing, 'exports dir'),
      /does not exist \(the volume-lifecycle-nbdkit unit creates it/,
    );
  });
});

test('volumectl doctor --env-file: the report, --json, and exit status 1 on a problem', async () => {
  const env = await controlEnv();
  const file = path.join(dir, 'control-worker.env');
  await writeFile(
    file,
    Object.entries(env)
      .filter(([k]) => k !== 'PATH')
      .map(([k, v]) => `${k}=${v}`)
      .join('\n'),
  );
  const r = await execa(
    process.execPath,
    ['--import', 'tsx', 'src/cli/volumectl.ts', '--json', 'doctor', '--env-file', file],
    {
      cwd: REPO,
      reject: false,
    },
  );
  assert.equal(r.exitCode, 1, 'no control worker polls: a problem');
  const out = JSON.parse(r.stdout) as {
    report: { target: string; role: string; checks: Check[] }[];
    failed: number;
  };
  assert.equal(out.report[0]?.role, 'control', 'the role comes from the file name');
  assert.equal(out.failed, 1);
  const human = await execa(
    process.execPath,
    ['--import', 'tsx', 'src/cli/volumectl.ts', 'doctor', '--env-file', file],
    { cwd: REPO, reject: false },
  );
  assert.match(human.stdout, /^ {2}OK {4}database migrated: /m);
  assert.match(human.stdout, /^ {2}FAIL {2}control queue polled: /m);
  assert.match(human.stdout, /^1 problem\(s\) found\.$/m);
  assert.doesNotMatch(human.stdout + human.stderr, new RegExp(sim.secretKey), 'the secret never shows');
});

describe("the migration engine's database (ENGINE_DB_NAME)", () => {
  test('found when unset; when set, its tables, columns, unique keys and our grants are checked, each problem named', async () => {
    const e = await freshEngineDatabase('doctor');
    const user = `vl_doctor_${randomUUID().slice(0, 8)}`;
    try {
      const unset = await runDoctor(await controlEnv(), 'control');
      assert.deepEqual(status(unset, 'engine database'), ['warn']);
      assert.match(detail(unset, 'engine database'), new RegExp(`${e.name}.*set ENGINE_DB_NAME=`));

      const good = await runDoctor(await controlEnv({ ENGINE_DB_NAME: e.name }), 'control');
      assert.deepEqual(status(good, 'engine database'), ['ok'], detail(good, 'engine database'));

      const none = await runDoctor(await controlEnv({ ENGINE_DB_NAME: 'vl_no_such_engine_db' }), 'control');
      assert.deepEqual(status(none, 'engine database'), ['fail']);
      assert.match(detail(none, 'engine database'), /vl_no_such_engine_db does not exist on this server/);

      // A user that may only read the engine's tables.
      await e.pool.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw-doctor'`);
      await e.pool.query(`GRANT ALL ON \`${db.name}\`.* TO '${user}'@'%'`);
      await e.pool.query(`GRANT SELECT ON \`${e.name}\`.* TO '${user}'@'%'`);
      const readOnly = await runDoctor(
        await controlEnv({ ENGINE_DB_NAME: e.name, DB_USER: user, DB_PASSWORD: 'pw-doctor' }),
        'control',
      );
      assert.ok(status(readOnly, 'engine database').includes('fail'), detail(readOnly, 'engine database'));
      assert.match(
        detail(readOnly, 'engine database'),
        /may not INSERT .*\.device_mappings: GRANT SELECT, INSERT, UPDATE, DELETE/,
      );

      // An engine schema without a column we write.
      await e.pool.query('ALTER TABLE device_mappings DROP COLUMN symlink_path');
      const old = await runDoctor(await controlEnv({ ENGINE_DB_NAME: e.name }), 'control');
      assert.deepEqual(status(old, 'engine database'), ['fail']);
      assert.match(detail(old, 'engine database'), /device_mappings lacks column\(s\) symlink_path/);
    } finally {
      await e.pool.query(`DROP USER IF EXISTS '${user}'@'%'`).catch(() => {});
      await e.close();
    }
  });
});
