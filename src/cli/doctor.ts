// `volumectl doctor`: checks one host's configuration end to end, as each installed service
// would see it (its env file under /etc/volume-lifecycle), and says what is wrong in plain words
// with the remedy. Read-only: it creates nothing, except a probe file it removes at once.
import { Connection, isGrpcServiceError } from '@temporalio/client';
import type { Command } from 'commander';
import { execa } from 'execa';
import { constants as fsc } from 'node:fs';
import { access, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CloudStackError, CloudStackNetworkError } from '../cloudstack/errors.js';
import { versionLine } from '../config/build-info.js';
import { parseEnvFile } from '../config/env-file.js';
import { ConfigError, loadConfig, type AppConfig } from '../config/index.js';
import { dbPoolTlsOptions, SECRET_FILE_VARIABLES } from '../config/production.js';
import { migrations } from '../db/migrations/index.js';
import { createPool } from '../db/pool.js';
import { checkEngineDatabase, findEngineDatabases } from '../engine-contract/engine-schema.js';
import { localRunner } from '../command/runner.js';
import { listExports } from '../nbd/index.js';
import { checkTemporalEndpoint, temporalConnectionOptions } from '../temporal/connection.js';
import { SA, searchAttributeFlags } from '../temporal/search-attributes.js';
import { controlQueue, hostQueue } from '../temporal/task-queues.js';
import { createCloudStack } from '../worker/wiring.js';

export type Role = 'host' | 'control' | 'api';
export type Status = 'ok' | 'warn' | 'fail';
export interface Check {
  check: string;
  status: Status;
  detail: string;
}

/** Where the installer puts the env files; the service each one configures. */
export const ETC_DIR = '/etc/volume-lifecycle';
export const ENV_FILES: Record<string, Role> = {
  'host-worker.env': 'host',
  'control-worker.env': 'control',
  'api.env': 'api',
};
const ROLE_NAMES: Record<Role, string> = { host: 'host worker', control: 'control worker', api: 'HTTP API' };

// temporal.api.enums.v1.IndexedValueType and TaskQueueType (WORKFLOW = 1, ACTIVITY = 2).
const INDEXED_TYPE: Record<string, number> = {
  TEXT: 1,
  KEYWORD: 2,
  INT: 3,
  DOUBLE: 4,
  BOOL: 5,
  DATETIME: 6,
  KEYWORD_LIST: 7,
};
const TQ_WORKFLOW = 1;
const TQ_ACTIVITY = 2;
/** A poller older than this is a worker that went away (the server remembers pollers ~5 min). */
const POLLER_FRESH_MS = 120_000;

const grpcCode = (err: unknown): number | undefined => (isGrpcServiceError(err) ? err.code : undefined);

async function tool(file: string, args: string[]): Promise<{ ok: boolean; out: string; missing: boolean }> {
  const r = await execa(file, args, { reject: false, timeout: 10_000, env: { LC_ALL: 'C' }, all: true });
  const missing = (r as { code?: string }).code === 'ENOENT';
  return { ok: r.exitCode === 0, out: String(r.all ?? '').trim(), missing };
}

/** Every check for one role, on `env` as the service's process would get it. */
export async function runDoctor(env: NodeJS.ProcessEnv, role: Role): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (check: string, status: Status, detail: string) => checks.push({ check, status, detail });

  let cfg: AppConfig;
  try {
    cfg = loadConfig(env);
    add('configuration', 'ok', 'every setting parses');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const i of err.issues) add('configuration', 'fail', `${i.field}: ${i.message}`);
    return checks;
  }
  await secretFileChecks(env, add);

  if (role === 'host' && !cfg.APPLIANCE_VM_ID)
    add('configuration', 'fail', 'APPLIANCE_VM_ID is not set: the host worker needs the appliance VM UUID');
  if (role === 'api' && !cfg.API_TOKEN)
    add(
      'configuration',
      'fail',
      'API_TOKEN (or API_TOKEN_FILE) is not set: the API refuses to start without it',
    );

  await temporalChecks(cfg, role, add);
  if (role === 'host') await hostChecks(cfg, add);
  else {
    await databaseChecks(cfg, add);
    await cloudStackChecks(cfg, add);
  }
  return checks;
}

async function secretFileChecks(env: NodeJS.ProcessEnv, add: (c: string, s: Status, d: string) => void) {
  const files = [
    ...SECRET_FILE_VARIABLES.map((v) => `${v}_FILE`),
    'TEMPORAL_TLS_KEY_FILE',
    'DB_TLS_KEY_FILE',
  ];
  for (const v of files) {
    const f = env[v];
    if (!f || !path.isAbsolute(f)) continue;
    const st = await stat(f).catch(() => undefined);
    if (st && st.mode & 0o007)
      add(
        'secret files',
        'warn',
        `${v} ${f} is readable by every user (mode ${(st.mode & 0o777).toString(8)}): chmod 0640, group volume-lifecycle`,
      );
  }
}

async function temporalChecks(cfg: AppConfig, role: Role, add: (c: string, s: Status, d: string) => void) {
  let opts;
  try {
    opts = temporalConnectionOptions(cfg);
  } catch (err) {
    add('Temporal', 'fail', (err as Error).message);
    return;
  }
  const how = opts.tls ? `TLS${opts.tls.clientCertPair ? ' with a client certificate' : ''}` : 'plaintext';
  const problem = await checkTemporalEndpoint(opts);
  if (problem) {
    add('Temporal reachable', 'fail', problem);
    return;
  }
  let conn: Connection;
  try {
    conn = await Connection.connect({ ...opts, connectTimeout: 5_000 });
  } catch (err) {
    add('Temporal reachable', 'fail', `${cfg.TEMPORAL_ADDRESS} (${how}): ${(err as Error).message}`);
    return;
  }
  try {
    add('Temporal reachable', 'ok', `${cfg.TEMPORAL_ADDRESS} over ${how}`);
    const ns = cfg.TEMPORAL_NAMESPACE;
    try {
      await conn.workflowService.describeNamespace({ namespace: ns });
      add('Temporal namespace', 'ok', `namespace "${ns}" exists`);
    } catch (err) {
      const code = grpcCode(err);
      add(
        'Temporal namespace',
        'fail',
        code === 5
          ? `namespace "${ns}" does not exist on ${cfg.TEMPORAL_ADDRESS}: create it (temporal operator namespace create --namespace ${ns}) or fix TEMPORAL_NAMESPACE`
          : code === 16 || code === 7
            ? `Temporal refused our credentials for namespace "${ns}" (TEMPORAL_API_KEY / client certificate): ${(err as Error).message}`
            : `describing namespace "${ns}" failed: ${(err as Error).message}`,
      );
      return;
    }
    try {
      const r = await conn.operatorService.listSearchAttributes({ namespace: ns });
      const have = r.customAttributes ?? {};
      const wrong: string[] = [];
      // `Name=Type` as the Temporal CLI spells it, for the remedy.
      const cliType = new Map(searchAttributeFlags().map((f) => f.split('=') as [string, string]));
      for (const key of Object.values(SA)) {
        const got = have[key.name];
        if (got === undefined) wrong.push(`--name ${key.name} --type ${cliType.get(key.name) ?? key.type}`);
        else if (Number(got) !== INDEXED_TYPE[key.type])
          add(
            'search attributes',
            'fail',
            `${key.name} is registered with another type (${String(got)}), not ${key.type}`,
          );
      }
      if (wrong.length)
        add(
          'search attributes',
          'fail',
          `missing in "${ns}": ${wrong.map((w) => w.split(' ')[1]).join(', ')}; register: temporal operator search-attribute create --namespace ${ns} ${wrong.join(' ')}`,
        );
      else add('search attributes', 'ok', `all ${Object.keys(SA).length} registered`);
    } catch (err) {
      add('search attributes', 'fail', `cannot list them: ${(err as Error).message}`);
    }

    const polled = async (queue: string, type: number, label: string, status: Status, remedy: string) => {
      try {
        const r = await conn.workflowService.describeTaskQueue({
          namespace: ns,
          taskQueue: { name: queue, kind: 1 },
          taskQueueType: type,
        });
        const now = Date.now();
        const fresh = r.pollers.filter((p) => {
          const s = Number(String(p.lastAccessTime?.seconds ?? 0));
          return now - s * 1000 < POLLER_FRESH_MS;
        });
        if (!fresh.length) add(label, status, `no worker polls ${queue}: ${remedy}`);
        else
          add(
            label,
            'ok',
            `${queue} polled by ${fresh
              .map(
                (p) =>
                  `${p.identity ?? '?'}${p.deploymentOptions?.buildId ? ` (build ${p.deploymentOptions.buildId})` : ''}`,
              )
              .join(', ')}`,
          );
      } catch (err) {
        add(label, 'fail', `DescribeTaskQueue ${queue} failed: ${(err as Error).message}`);
      }
    };
    const p = cfg.TASK_QUEUE_PREFIX;
    if (role === 'host' && cfg.APPLIANCE_VM_ID)
      await polled(
        hostQueue(p, cfg.APPLIANCE_VM_ID),
        TQ_ACTIVITY,
        'host queue polled',
        'fail',
        'is the host worker running? systemctl status volume-lifecycle-host-worker; journalctl -u volume-lifecycle-host-worker',
      );
    if (role === 'control' || role === 'api')
      await polled(
        controlQueue(p),
        TQ_WORKFLOW,
        'control queue polled',
        role === 'control' ? 'fail' : 'warn',
        'no saga runs without a control worker: systemctl status volume-lifecycle-control-worker',
      );
    if (role === 'control')
      for (const id of new Set([
        ...(cfg.APPLIANCE_VM_ID ? [cfg.APPLIANCE_VM_ID] : []),
        ...cfg.APPLIANCE_VM_IDS,
      ]))
        await polled(
          hostQueue(p, id),
          TQ_ACTIVITY,
          `appliance ${id} polled`,
          'warn',
          'device steps for this appliance wait until its host worker runs (volumectl doctor on the appliance says why)',
        );
  } finally {
    await conn.close();
  }
}

async function hostChecks(cfg: AppConfig, add: (c: string, s: Status, d: string) => void) {
  const dm = await tool('dmsetup', ['version']);
  if (dm.missing) add('dmsetup', 'fail', 'dmsetup is not installed: apt-get install dmsetup');
  else {
    const lib = /Library version:\s*(\S+)/.exec(dm.out)?.[1] ?? '?';
    const driver = /Driver version:\s*(\S+)/.exec(dm.out)?.[1];
    if (driver) add('dmsetup', 'ok', `library ${lib}, kernel driver ${driver}`);
    else
      add(
        'dmsetup',
        'fail',
        `dmsetup is installed (library ${lib}) but the kernel's device-mapper does not answer (${dm.out.split('\n').find((l) => /mapper|driver/i.test(l)) ?? 'no driver version'}): run as root, and load it with modprobe dm_mod`,
      );
  }
  const server =
    cfg.EXPORT_BACKEND === 'nbdkit-dir'
      ? { bin: 'nbdkit', args: ['--version'], pkg: 'nbdkit' }
      : { bin: 'nbd-server', args: ['-V'], pkg: 'nbd-server' };
  const s = await tool(server.bin, server.args);
  if (s.missing) add(server.bin, 'fail', `${server.bin} is not installed: apt-get install ${server.pkg}`);
  else add(server.bin, 'ok', s.out.split('\n')[0] ?? server.bin);
  for (const [bin, args, pkg] of [
    ['nbdinfo', ['--version'], 'libnbd-bin'],
    ['blockdev', ['--version'], 'util-linux'],
    ['pgrep', ['--version'], 'procps'],
  ] as const) {
    const t = await tool(bin, [...args]);
    if (t.missing) add(bin, 'fail', `${bin} is not installed: apt-get install ${pkg}`);
  }

  const dir = cfg.EXPORT_BACKEND === 'nbdkit-dir' ? cfg.NBD_EXPORTS_DIR : cfg.NBD_CONF_DIR;
  const what = cfg.EXPORT_BACKEND === 'nbdkit-dir' ? 'NBD_EXPORTS_DIR' : 'NBD_CONF_DIR';
  try {
    await access(dir, fsc.W_OK);
    const probe = path.join(dir, `.doctor-${process.pid}`);
    await writeFile(probe, '');
    await unlink(probe);
    add('exports dir', 'ok', `${what} ${dir} is writable`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    add(
      'exports dir',
      'fail',
      code === 'ENOENT'
        ? `${what} ${dir} does not exist (the volume-lifecycle-nbdkit unit creates it: systemctl start volume-lifecycle-nbdkit)`
        : `${what} ${dir} is not writable (${code}): the host worker runs as root; check the mount and mode`,
    );
  }

  try {
    const served = await listExports({ host: cfg.NBD_HOST, port: cfg.NBD_PORT }, { runner: localRunner });
    add('NBD server', 'ok', `answers at ${cfg.NBD_HOST}:${cfg.NBD_PORT} (${served.length} exports)`);
  } catch (err) {
    add(
      'NBD server',
      cfg.NBD_MANAGE_SERVER ? 'warn' : 'fail',
      `nothing serves NBD at ${cfg.NBD_HOST}:${cfg.NBD_PORT} (${(err as Error).message.split('\n')[0]}): ${
        cfg.NBD_MANAGE_SERVER
          ? 'the host worker starts it (NBD_MANAGE_SERVER=true); is the host worker running?'
          : 'systemctl status volume-lifecycle-nbdkit'
      }`,
    );
  }
}

async function databaseChecks(cfg: AppConfig, add: (c: string, s: Status, d: string) => void) {
  let pool;
  try {
    pool = createPool(cfg, { ...dbPoolTlsOptions(cfg), connectionLimit: 1, connectTimeout: 5_000 });
  } catch (err) {
    add('database', 'fail', (err as Error).message);
    return;
  }
  const where = `${cfg.DB_USER}@${cfg.DB_HOST}:${cfg.DB_PORT}/${cfg.DB_NAME}`;
  try {
    const [rows] = await pool.query('SELECT name FROM schema_migrations');
    const done = new Set((rows as { name: string }[]).map((r) => String(r.name)));
    const known = new Set(migrations.map((m) => m.name));
    const pending = migrations.filter((m) => !done.has(m.name)).map((m) => m.name);
    const unknown = [...done].filter((n) => !known.has(n));
    if (pending.length)
      add(
        'database migrated',
        'fail',
        `${where}: ${pending.length} migration(s) pending (${pending.join(', ')}): run volume-lifecycle migrate (the control worker also migrates at start)`,
      );
    else if (unknown.length)
      add(
        'database migrated',
        'warn',
        `${where} has migrations this release does not know (${unknown.join(', ')}): a newer release migrated it; upgrade this host`,
      );
    else add('database migrated', 'ok', `${where}: all ${migrations.length} migrations applied`);
    await engineDatabaseCheck(cfg, pool, add);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { sqlMessage?: string };
    const code = e.code ?? '';
    add(
      'database migrated',
      'fail',
      code === 'ER_NO_SUCH_TABLE'
        ? `${where} is not migrated at all: run volume-lifecycle migrate`
        : code === 'ER_BAD_DB_ERROR'
          ? `database ${cfg.DB_NAME} does not exist on ${cfg.DB_HOST}:${cfg.DB_PORT}: run volume-lifecycle migrate (it creates it, given the privilege), or fix DB_NAME`
          : code === 'ER_ACCESS_DENIED_ERROR' || code === 'ER_DBACCESS_DENIED_ERROR'
            ? `MySQL refused ${cfg.DB_USER} (DB_USER, DB_PASSWORD / DB_PASSWORD_FILE): ${e.sqlMessage ?? e.message}`
            : code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ENOTFOUND'
              ? `MySQL at ${cfg.DB_HOST}:${cfg.DB_PORT} cannot be reached (${code}): check DB_HOST, DB_PORT`
              : /secure|ssl|tls|certificate/i.test(`${code} ${e.message}`)
                ? `TLS to MySQL failed (DB_TLS*): ${e.message}`
                : `${where}: ${e.message}`,
    );
  } finally {
    await pool.end();
  }
}

/** The migration engine's database (ENGINE_DB_NAME): there, shaped as we write it, ours to write. */
async function engineDatabaseCheck(
  cfg: AppConfig,
  pool: ReturnType<typeof createPool>,
  add: (c: string, s: Status, d: string) => void,
) {
  try {
    if (!cfg.ENGINE_DB_NAME) {
      const found = await findEngineDatabases(pool);
      if (found.length)
        add(
          'engine database',
          'warn',
          `ENGINE_DB_NAME is not set, but ${found.join(', ')} on this server has the migration engine's tables: set ENGINE_DB_NAME=${found[0]} so every operation keeps the rows the engine reads there`,
        );
      else add('engine database', 'ok', 'none configured (ENGINE_DB_NAME unset) and none on this server');
      return;
    }
    const r = await checkEngineDatabase(pool, cfg.ENGINE_DB_NAME);
    if (r.ok)
      add(
        'engine database',
        'ok',
        `${cfg.ENGINE_DB_NAME}: device_mappings, nbd_exports and ossea_volumes as the engine's schema has them, and writable by ${cfg.DB_USER}`,
      );
    else for (const p of r.problems) add('engine database', 'fail', p);
  } catch (err) {
    add('engine database', 'fail', `${cfg.ENGINE_DB_NAME ?? '(search)'}: ${(err as Error).message}`);
  }
}

async function cloudStackChecks(cfg: AppConfig, add: (c: string, s: Status, d: string) => void) {
  let cs;
  try {
    cs = createCloudStack(cfg);
  } catch (err) {
    add(
      'CloudStack keys',
      'fail',
      `${(err as Error).message} (CLOUDSTACK_API_KEY, CLOUDSTACK_SECRET_KEY[_FILE])`,
    );
    return;
  }
  try {
    // listZones: cheap, and any account may call it; a refused signature is a 401.
    await cs.call('listZones');
    add('CloudStack keys', 'ok', `${cfg.CLOUDSTACK_URL} accepts our API key and signature`);
  } catch (err) {
    if (err instanceof CloudStackError && err.errorcode === 401)
      add(
        'CloudStack keys',
        'fail',
        `CloudStack at ${cfg.CLOUDSTACK_URL} refused our keys (CLOUDSTACK_API_KEY, CLOUDSTACK_SECRET_KEY / CLOUDSTACK_SECRET_KEY_FILE): ${err.errortext}`,
      );
    else if (err instanceof CloudStackNetworkError)
      add(
        'CloudStack keys',
        'fail',
        `CloudStack at ${cfg.CLOUDSTACK_URL} cannot be reached: ${err.message} (CLOUDSTACK_URL)`,
      );
    else add('CloudStack keys', 'fail', `CloudStack at ${cfg.CLOUDSTACK_URL}: ${(err as Error).message}`);
    return;
  }
  const ids = new Set([...(cfg.APPLIANCE_VM_ID ? [cfg.APPLIANCE_VM_ID] : []), ...cfg.APPLIANCE_VM_IDS]);
  if (!ids.size)
    add('appliance known', 'warn', 'no APPLIANCE_VM_ID / APPLIANCE_VM_IDS set: nothing to look up');
  for (const id of ids) {
    try {
      const vm = await cs.getVirtualMachine(id);
      if (vm) add('appliance known', 'ok', `appliance ${id} is CloudStack VM "${vm.name}" (${vm.state})`);
      else
        add('appliance known', 'fail', `CloudStack does not know appliance ${id}: check APPLIANCE_VM_ID(S)`);
    } catch (err) {
      add('appliance known', 'fail', `looking up appliance ${id}: ${(err as Error).message}`);
    }
  }
}

/** Env files to check: those given, else every installed one, else this shell's environment. */
export async function doctorTargets(
  files: string[],
  role: Role | undefined,
  etcDir = ETC_DIR,
): Promise<{ label: string; role: Role; env: NodeJS.ProcessEnv }[]> {
  const fromFile = async (file: string, r: Role | undefined) => {
    const guessed = r ?? ENV_FILES[path.basename(file)];
    if (!guessed) throw new Error(`${file}: say which service it configures with --role host|control|api`);
    // As systemd starts the unit: the file's settings on a clean environment (plus PATH for tools).
    const env = { PATH: process.env.PATH, ...parseEnvFile(await readFile(file, 'utf8')) };
    return { label: `${file} (${ROLE_NAMES[guessed]})`, role: guessed, env };
  };
  if (files.length) return Promise.all(files.map((f) => fromFile(f, role)));
  const installed: string[] = [];
  for (const name of Object.keys(ENV_FILES)) {
    const f = path.join(etcDir, name);
    if (
      await access(f, fsc.R_OK).then(
        () => true,
        () => false,
      )
    )
      installed.push(f);
  }
  if (installed.length)
    return Promise.all(
      installed
        .filter((f) => !role || ENV_FILES[path.basename(f)] === role)
        .map((f) => fromFile(f, undefined)),
    );
  if (!role)
    throw new Error(
      `no env files in ${etcDir}: pass --env-file <file>, or --role host|control|api to check this shell's environment`,
    );
  return [{ label: `this shell's environment (${ROLE_NAMES[role]})`, role, env: process.env }];
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** `volumectl doctor` and `volumectl --version` (registered by src/cli/volumectl.ts). */
export function registerReleaseCommands(program: Command): void {
  program.version(versionLine('volumectl'), '-V, --version', 'print the version');
  program
    .command('doctor')
    .description("check this host's configuration end to end and say what is wrong")
    .option(
      '--env-file <file>',
      'a service env file to check (repeatable; default: each one installed)',
      collect,
      [],
    )
    .option('--role <role>', 'host | control | api (default: from the env file name)')
    .action(async (o: { envFile: string[]; role?: string }) => {
      if (o.role !== undefined && !['host', 'control', 'api'].includes(o.role))
        throw new Error(`--role: must be host, control or api, not ${o.role}`);
      const json = Boolean(program.opts().json);
      const targets = await doctorTargets(o.envFile, o.role as Role | undefined);
      let failed = 0;
      const report: { target: string; role: Role; checks: Check[] }[] = [];
      for (const t of targets) {
        const checks = await runDoctor(t.env, t.role);
        failed += checks.filter((c) => c.status === 'fail').length;
        report.push({ target: t.label, role: t.role, checks });
        if (!json) {
          console.log(`${t.label}`);
          for (const c of checks)
            console.log(`  ${c.status.toUpperCase().padEnd(5)} ${c.check}: ${c.detail}`);
        }
      }
      if (json) console.log(JSON.stringify({ version: versionLine('volumectl'), report, failed }));
      else console.log(failed ? `${failed} problem(s) found.` : 'no problems found.');
      process.exitCode = failed ? 1 : 0;
    });
}
