// The packaging files agree with the code: the units run services the launcher has, with the env
// files the installer creates; every setting in the templates is one the code reads; the drain
// time fits the stop timeout; the compose file and Dockerfile run the release image as the issue
// asks (docker is not on this machine: read, not run).
import { execa } from 'execa';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import YAML from 'yaml';
import { parseEnvFile } from '../../src/config/env-file.js';
import { envSchema } from '../../src/config/index.js';
import { SECRET_FILE_VARIABLES } from '../../src/config/production.js';
import { searchAttributeFlags } from '../../src/temporal/search-attributes.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const read = (p: string) => readFile(new URL(`../../${p}`, import.meta.url), 'utf8');
const unitValues = (text: string, key: string) =>
  [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());

/** Every variable the processes read: the schema, the `_FILE` secrets, pino's LOG_LEVEL. */
const KNOWN = new Set([
  ...Object.keys(envSchema.shape),
  ...SECRET_FILE_VARIABLES.map((v) => `${v}_FILE`),
  'LOG_LEVEL',
  'NODE_ENV',
  'NODE_OPTIONS', // read by node itself
  'HEALTHCHECK_URL',
]);

async function launcherServices(): Promise<string[]> {
  const src = await read('src/cli/service.ts');
  const block = /const SERVICES[^{]*\{([\s\S]*?)\};/.exec(src)?.[1] ?? '';
  return [...block.matchAll(/^\s*'?([a-z-]+)'?:/gm)].map((m) => m[1]!);
}

test('units run launcher services with the env files the installer creates', async () => {
  const services = await launcherServices();
  const units = (await readdir(new URL('../../packaging/systemd/', import.meta.url))).sort();
  assert.deepEqual(units, [
    'volume-lifecycle-api.service',
    'volume-lifecycle-control-worker.service',
    'volume-lifecycle-host-worker.service',
    'volume-lifecycle-nbdkit.service',
  ]);
  const templates = await readdir(new URL('../../packaging/env/', import.meta.url));
  for (const u of units) {
    const text = await read(`packaging/systemd/${u}`);
    assert.ok(
      unitValues(text, 'After')[0]?.includes('network-online.target'),
      `${u}: After=network-online.target`,
    );
    assert.equal(unitValues(text, 'Restart')[0], 'always', `${u}: restarts`);
    for (const f of unitValues(text, 'EnvironmentFile'))
      assert.ok(
        templates.includes(f.replace(/^-?\/etc\/volume-lifecycle\//, '')),
        `${u}: ${f} has a template`,
      );
    const exec = unitValues(text, 'ExecStart')[0]!;
    if (u.includes('nbdkit')) continue;
    const m =
      /^\/opt\/volume-lifecycle\/current\/node\/bin\/node \/opt\/volume-lifecycle\/current\/src\/cli\/service\.js ([a-z-]+)$/.exec(
        exec,
      );
    assert.ok(m && services.includes(m[1]!), `${u}: ExecStart runs a launcher service: ${exec}`);
    // Hardening that must never silently go away.
    for (const k of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes'])
      assert.ok(text.includes(`\n${k}\n`), `${u}: ${k}`);
    if (!u.includes('host-worker')) {
      assert.ok(
        text.includes('\nUser=volume-lifecycle\n') && text.includes('\nCapabilityBoundingSet=\n'),
        `${u}: unprivileged`,
      );
      assert.ok(text.includes('\nPrivateDevices=yes\n'), `${u}: no devices`);
    }
  }
  const host = await read('packaging/systemd/volume-lifecycle-host-worker.service');
  assert.ok(
    unitValues(host, 'After')[0]!.includes('volume-lifecycle-nbdkit.service'),
    'host worker after nbdkit',
  );
});

test('a worker drains within its unit stop timeout', async () => {
  const grace = envSchema.shape.WORKER_SHUTDOWN_GRACE.parse(undefined) as number;
  for (const u of ['volume-lifecycle-host-worker.service', 'volume-lifecycle-control-worker.service']) {
    const text = await read(`packaging/systemd/${u}`);
    const stop = Number(/^TimeoutStopSec=(\d+)s$/m.exec(text)?.[1]) * 1000;
    // workers.ts: the force time is grace + 15 s; systemd must wait longer than that.
    assert.ok(stop > grace + 15_000, `${u}: TimeoutStopSec ${stop} ms > ${grace + 15_000} ms`);
    assert.equal(
      unitValues(text, 'KillMode')[0],
      'mixed',
      `${u}: SIGTERM to the worker only, its children finish`,
    );
  }
});

test('every setting in the env templates is one the code reads; the defaults agree', async () => {
  const host = await read('packaging/systemd/volume-lifecycle-host-worker.service');
  const nbdkit = await read('packaging/systemd/volume-lifecycle-nbdkit.service');
  for (const f of await readdir(new URL('../../packaging/env/', import.meta.url))) {
    const text = await read(`packaging/env/${f}`);
    // Commented-out settings too: a typo there becomes one when the operator uncomments it.
    const keys = [...text.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
    assert.ok(keys.length > 5, f);
    for (const k of keys) assert.ok(KNOWN.has(k), `${f}: ${k} is not a setting the code reads`);
    const values = parseEnvFile(text);
    for (const [k, v] of Object.entries(values))
      assert.doesNotMatch(v, /\s#/, `${f}: ${k}: a comment after a value would be part of it`);
  }
  const hostEnv = parseEnvFile(await read('packaging/env/host-worker.env'));
  assert.equal(hostEnv.NBD_MANAGE_SERVER, 'false', 'nbdkit runs as its own unit');
  assert.ok(
    unitValues(host, 'RuntimeDirectory')[0]!
      .split(' ')
      .includes(hostEnv.NBD_EXPORTS_DIR!.replace('/run/', '')),
  );
  assert.ok(unitValues(nbdkit, 'Environment')[0]!.includes(`NBD_EXPORTS_DIR=${hostEnv.NBD_EXPORTS_DIR}`));
  assert.ok(unitValues(nbdkit, 'Environment')[0]!.includes(`NBD_PORT=${hostEnv.NBD_PORT}`));
});

test('the installer and the build are valid shell', async () => {
  for (const f of [
    'packaging/install',
    'scripts/build',
    'packaging/bin/volumectl',
    'packaging/bin/volume-lifecycle',
  ])
    await execa(f.includes('/bin/') ? 'sh' : 'bash', ['-n', f], { cwd: REPO });
});

test('docker-compose runs the release image: launcher commands, healthchecks, drain time', async () => {
  const compose = YAML.parse(await read('docker-compose.yml'), { merge: true }) as {
    services: Record<
      string,
      {
        build?: string;
        image?: string;
        command?: string[] | string;
        healthcheck?: { test: string[] };
        environment?: Record<string, string>;
        stop_grace_period?: string;
      }
    >;
  };
  const services = await launcherServices();
  for (const name of ['migrate', 'control-worker', 'api']) {
    const s = compose.services[name]!;
    assert.equal(s.build, '.', `${name} builds this Dockerfile`);
    assert.ok(Array.isArray(s.command) && services.includes(s.command[0]!), `${name}: ${String(s.command)}`);
    for (const k of Object.keys(s.environment ?? {}))
      assert.ok(KNOWN.has(k), `${name}: ${k} is not a setting`);
    if (name !== 'migrate')
      assert.deepEqual(s.healthcheck?.test, ['CMD', 'node', '/app/src/cli/service.js', 'healthcheck']);
  }
  assert.match(compose.services['control-worker']!.environment!.WORKER_METRICS_ADDRESS!, /:9464$/);
  assert.ok(
    parseInt(compose.services['control-worker']!.stop_grace_period!) > 45,
    'longer than grace + force',
  );
  // The cluster is sized for the workload: shards fixed at creation, dynamic config mounted.
  const temporal = compose.services['temporal']! as {
    environment?: Record<string, string>;
    volumes?: string[];
  };
  assert.ok(Number(temporal.environment?.NUM_HISTORY_SHARDS) >= 8, 'enough shards (README sizing)');
  const mount = temporal.volumes?.find((v) =>
    v.endsWith(`:/etc/temporal/${temporal.environment?.DYNAMIC_CONFIG_FILE_PATH}:ro`),
  );
  assert.ok(
    mount,
    `the dynamic config file is mounted where DYNAMIC_CONFIG_FILE_PATH points: ${temporal.volumes}`,
  );
  const dyn = YAML.parse(await read(mount.split(':')[0]!.replace(/^\.\//, ''))) as Record<
    string,
    { value: unknown }[]
  >;
  assert.equal(
    dyn['frontend.enableUpdateWorkflowExecution']?.[0]?.value,
    true,
    'the operator update needs updates',
  );
  assert.ok(
    Number(dyn['history.transferProcessorMaxPollRPS']?.[0]?.value) > 20,
    'per-shard dispatch cap lifted',
  );
  // The search attributes temporal-setup registers are the code's.
  const setup = String(compose.services['temporal-setup']!.command);
  const registered = [...setup.matchAll(/--name (\w+) --type (\w+)/g)].map((m) => `${m[1]}=${m[2]}`);
  assert.deepEqual(registered.sort(), searchAttributeFlags().sort());
});

test('the Dockerfile: multi-stage from the release build, non-root, healthcheck', async () => {
  const df = await read('Dockerfile');
  assert.equal((df.match(/^FROM /gm) ?? []).length, 2, 'a build stage and a runtime stage');
  assert.match(df, /scripts\/build --stage \/app --no-node/);
  assert.match(df, /^USER node$/m);
  assert.match(df, /^HEALTHCHECK .*\n\s+CMD \["node", "\/app\/src\/cli\/service\.js", "healthcheck"\]/m);
  assert.match(df, /^ENTRYPOINT \["node", "\/app\/src\/cli\/service\.js"\]/m);
  assert.doesNotMatch(df, /tsx/, 'no tsx at run time');
  const ignore = await read('.dockerignore');
  for (const p of ['node_modules', '.data', 'dist'])
    assert.match(ignore, new RegExp(`^${p.replace('.', '\\.')}$`, 'm'));
});
