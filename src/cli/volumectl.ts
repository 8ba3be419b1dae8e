// volumectl: the operator's and script's command line over the same client, database and
// workflows as the API. Human tables by default, --json for scripts; exit 2 on bad input.
import { dbPoolTlsOptions } from '../config/production.js';
import { Command } from 'commander';
import {
  InvalidRequestError,
  VolumeBusyError,
  VolumeLifecycleClient,
  type OperationHandle,
} from '../client/index.js';
import { loadConfig } from '../config/index.js';
import { OPERATIONS } from '../domain/operation-table.js';
import { getExport } from '../db/exports.js';
import { importOldDatabase } from '../engine-contract/import-old.js';
import { engineRowsFor } from '../engine-contract/engine-rows.js';
import { getMapping, listMappings } from '../db/mappings.js';
import { listOperations } from '../db/operations.js';
import { createPool } from '../db/pool.js';
import { reconcileNow } from '../reconcile/schedule.js';
import { connectClient } from '../temporal/connection.js';
import { registerReleaseCommands } from './doctor.js';

const program = new Command('volumectl')
  .option('--json', 'machine-readable output')
  .description('Volume lifecycle of the migration appliance');
const cfg = loadConfig();
const json = () => Boolean(program.opts().json);

function out(value: unknown, table?: () => void): void {
  if (json() || !table) console.log(JSON.stringify(value, null, json() ? 0 : 2));
  else table();
}

async function withClient<T>(
  fn: (c: VolumeLifecycleClient, t: Awaited<ReturnType<typeof connectClient>>) => Promise<T>,
): Promise<T> {
  const t = await connectClient(cfg);
  try {
    return await fn(
      new VolumeLifecycleClient({
        client: t.client,
        taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
        correlationTimeoutMs: cfg.CORRELATION_TIMEOUT_MS,
      }),
      t,
    );
  } finally {
    await t.connection.close();
  }
}
async function withDb<T>(fn: (db: ReturnType<typeof createPool>) => Promise<T>): Promise<T> {
  const db = createPool(cfg, dbPoolTlsOptions(cfg));
  try {
    return await fn(db);
  } finally {
    await db.end();
  }
}
const appliance = (o: { appliance?: string }) => o.appliance ?? cfg.APPLIANCE_VM_ID ?? '';

/** Print step changes to stderr while waiting, then the result. */
async function report(h: OperationHandle, wait: boolean): Promise<void> {
  if (!wait)
    return out(
      { operationId: h.operationId, workflowId: h.workflowId, runId: h.runId, deduplicated: h.deduplicated },
      () => console.log(`${h.type} started: operation ${h.operationId} (workflow ${h.workflowId})`),
    );
  let last = '';
  const timer = setInterval(() => {
    void h.progress().then(
      (p) => {
        const now = `${p.state}: ${p.currentStep ?? '-'}`;
        if (now !== last) process.stderr.write(`  … ${now}\n`);
        last = now;
      },
      () => {},
    );
  }, 250);
  try {
    const r = await h.result();
    out(r, () =>
      console.log(
        `${h.type} completed${r.access ? `: ${r.access.devicePath} → ${r.access.mapperPath} → ${r.access.exportName}` : ''}`,
      ),
    );
  } finally {
    clearInterval(timer);
  }
}

const op = (
  name: string,
  describe: string,
  build: (volume: string, o: Record<string, string | boolean | undefined>) => Record<string, unknown>,
  extra?: (c: Command) => Command,
) => {
  let c = program
    .command(`${name} <volume>`)
    .description(describe)
    .option('--appliance <vmId>', 'appliance VM id (default APPLIANCE_VM_ID)')
    .option('--operation-id <uuid>', 'idempotency key')
    .option('--wait', 'wait and show progress');
  if (extra) c = extra(c);
  c.action(async (volume: string, o: Record<string, string | boolean | undefined>) => {
    await withClient(async (client) => {
      const req = {
        volumeId: volume,
        applianceVmId: appliance(o as { appliance?: string }),
        // An empty --operation-id= is passed on (and refused as not a UUID), never dropped.
        ...(o.operationId !== undefined ? { operationId: o.operationId } : {}),
        ...build(volume, o),
      };
      await report(
        await (client[name as 'attach'] as (r: unknown) => Promise<OperationHandle>)(req),
        Boolean(o.wait),
      );
    });
  });
};
/** A disk key as typed: digits are the number, anything else is passed on for the schema to judge. */
const diskKeyArg = (k: unknown) => (k === undefined ? undefined : /^\d+$/.test(String(k)) ? Number(k) : k);

op(
  OPERATIONS.attach.cli,
  OPERATIONS.attach.summary,
  (_v, o) => ({
    sourceVmName: o.vmName,
    diskKey: diskKeyArg(o.diskKey),
  }),
  (c) =>
    c
      .requiredOption('--vm-name <name>', 'source VM name')
      .requiredOption('--disk-key <key>', 'VMware disk key, e.g. 2000'),
);
op(OPERATIONS.detach.cli, OPERATIONS.detach.summary, () => ({}));
op(
  OPERATIONS.failover.cli,
  OPERATIONS.failover.summary,
  (_v, o) => ({ targetVmId: o.target, ...(o.asRoot ? { asRoot: true } : {}) }),
  (c) =>
    c
      .requiredOption('--target <vmId>', 'migrated VM id')
      .option('--as-root', "as the VM's root disk (CloudStack deviceid 0; the VM must be stopped)"),
);
op(OPERATIONS.failback.cli, OPERATIONS.failback.summary, () => ({}));
op(OPERATIONS.delete.cli, OPERATIONS.delete.summary, () => ({}));

program
  .command(OPERATIONS.create.cli)
  .description(OPERATIONS.create.summary)
  .requiredOption('--name <name>', 'CloudStack volume name')
  .requiredOption('--size-bytes <n>', 'size in bytes (rounded up to whole GiB)')
  .requiredOption('--disk-offering <uuid>', 'CloudStack disk offering id')
  .requiredOption('--zone <uuid>', 'CloudStack zone id')
  .option('--vm-name <name>', 'source VM name (with --disk-key: names the volume)')
  .option('--disk-key <key>', 'VMware disk key, e.g. 2000')
  .option('--appliance <vmId>', 'appliance VM id (default APPLIANCE_VM_ID)')
  .option('--operation-id <uuid>', 'idempotency key')
  .option('--wait', 'wait and show progress')
  .action(async (o: Record<string, string | boolean | undefined>) => {
    await withClient(async (client) => {
      const size = String(o.sizeBytes);
      const h = await client.create({
        applianceVmId: appliance(o as { appliance?: string }),
        ...(o.operationId !== undefined ? { operationId: o.operationId } : {}),
        name: o.name,
        // Not a number stays text, refused by the schema naming sizeBytes.
        sizeBytes: /^\d+$/.test(size) ? Number(size) : size,
        diskOfferingId: o.diskOffering,
        zoneId: o.zone,
        sourceVmName: o.vmName,
        diskKey: diskKeyArg(o.diskKey),
      });
      await report(h, Boolean(o.wait));
    });
  });

program
  .command(`${OPERATIONS.vm.cli} <failover|failback> <migrated-vm>`)
  .description(OPERATIONS.vm.summary)
  .requiredOption('--volumes <ids>', "the VM's volume ids, comma-separated")
  .option('--root <volume>', 'the volume that goes on as the root disk (failover)')
  .option('--appliance <vmId>', 'appliance VM id (default APPLIANCE_VM_ID)')
  .option('--operation-id <uuid>', 'idempotency key')
  .option('--wait', 'wait for every volume and print the results')
  .action(async (type: string, target: string, o: Record<string, string | boolean | undefined>) => {
    await withClient(async (client) => {
      const ids = String(o.volumes)
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean);
      const h = await client.vm({
        applianceVmId: appliance(o as { appliance?: string }),
        ...(o.operationId !== undefined ? { operationId: o.operationId } : {}),
        type,
        targetVmId: target,
        volumes: ids.map((volumeId) => ({ volumeId, ...(o.root === volumeId ? { asRoot: true } : {}) })),
      });
      if (!o.wait)
        return out({ operationId: h.operationId, workflowId: h.workflowId }, () =>
          console.log(`vm ${type} started: operation ${h.operationId} (workflow ${h.workflowId})`),
        );
      const r = await h.result();
      out(r, () => {
        for (const [id, v] of Object.entries(r.volumes)) console.log(`${id}  ${v.type} ${v.status}`);
      });
    });
  });

for (const action of ['abort', 'retry', 'skip'] as const) {
  program
    .command(`${action} <volume-or-operation>`)
    .description(
      action === 'abort'
        ? 'abort the running operation (completed steps are compensated)'
        : `${action} a compensation that waits for an operator`,
    )
    .requiredOption('--reason <text>', 'why (audited)')
    .action(async (volume: string, o: { reason: string }) => {
      await withClient(async (client) =>
        out(
          {
            answer: await client.operator(volume, {
              action,
              reason: o.reason,
              operator: process.env.USER ?? 'operator',
            }),
          },
          undefined,
        ),
      );
    });
}

program
  .command('show <volume-or-operation>')
  .description("a volume's mapping, export, latest operation and the engine's rows; or one operation")
  .action(async (ref: string) => {
    if (!/^[0-9a-f-]{36}$/i.test(ref))
      throw new InvalidRequestError([{ field: 'volume', message: 'must be a UUID' }]);
    const id = ref.toLowerCase();
    await withDb(async (db) => {
      const m = await getMapping(db, id);
      if (!m) {
        // An operation id (a create refused before CloudStack gave it a volume has no other).
        const [op] = await listOperations(db, { operationId: id });
        if (!op)
          throw new InvalidRequestError([{ field: 'volume', message: `no volume or operation ${id}` }]);
        out({ operation: op }, () =>
          console.log(
            `operation     ${op.operationId}\ntype          ${op.type}\nstatus        ${op.status}\nvolume        ${op.volumeId ?? '-'}` +
              (op.error ? `\nerror         ${op.error}` : ''),
          ),
        );
        return;
      }
      const [last] = await listOperations(db, { volumeId: id, limit: 1 });
      const engine = engineRowsFor(cfg);
      const engineRows = engine ? await engine.rowsOf(db, id) : undefined;
      const value = {
        mapping: m,
        export: (await getExport(db, id)) ?? null,
        latestOperation: last ?? null,
        ...(engineRows ? { engine: engineRows } : {}),
      };
      out(value, () => {
        console.log(
          `volume        ${m.volumeId}\nname          ${m.persistentName}\nlocation      ${m.location}${m.targetVmId ? ` (${m.targetVmId})` : ''}`,
        );
        console.log(
          `device        ${m.devicePath ?? '-'} → ${m.mapperPath} (dm ${m.dmState})\nexport        ${value.export?.exportName ?? '-'}`,
        );
        if (last) console.log(`last op       ${last.type} ${last.status} ${last.operationId}`);
        if (engineRows) {
          const dm = engineRows.mapping;
          console.log(
            `engine        ${engine!.database}: ${dm ? `device_path ${String(dm.device_path)}, ${String(dm.cloudstack_state)}, operation_mode ${String(dm.operation_mode)}` : 'no device_mappings row'}; ` +
              `exports ${engineRows.exports.map((e) => `${String(e.export_name)}${e.vm_disk_id ? ` (vm_disk_id ${String(e.vm_disk_id)})` : ''}`).join(', ') || 'none'}`,
          );
        }
      });
    });
  });

program
  .command('list')
  .description('every mapped volume')
  .action(async () => {
    await withDb(async (db) => {
      const rows = await listMappings(db);
      out(rows, () => {
        console.log(
          ['VOLUME'.padEnd(36), 'NAME'.padEnd(24), 'LOCATION'.padEnd(10), 'DEVICE'.padEnd(10), 'DM'].join(
            '  ',
          ),
        );
        for (const r of rows)
          console.log(
            [
              r.volumeId,
              String(r.persistentName).padEnd(24),
              r.location.padEnd(10),
              String(r.devicePath ?? '-').padEnd(10),
              r.dmState,
            ].join('  '),
          );
      });
    });
  });

program
  .command('ops')
  .description('recent operations')
  .option('--stuck', 'only those waiting for an operator or running long')
  .option('--limit <n>', 'how many', '50')
  .action(async (o: { stuck?: boolean; limit: string }) => {
    await withDb(async (db) => {
      let rows = await listOperations(db, { limit: Number(o.limit) });
      if (o.stuck)
        rows = rows.filter(
          (r) =>
            r.status === 'needs_attention' ||
            (r.status === 'running' && Date.now() - r.startedAt.getTime() > 10 * 60_000),
        );
      out(rows, () => {
        for (const r of rows)
          console.log(
            `${r.startedAt.toISOString()}  ${r.type.padEnd(9)} ${r.status.padEnd(16)} ${r.volumeId}  ${r.operationId}${r.error ? `  ${r.error.slice(0, 120)}` : ''}`,
          );
      });
    });
  });

program
  .command('reconcile')
  .description('run a reconcile pass now')
  .option('--appliance <vmId>')
  .option('--dry-run', 'only report')
  .option('--wait', 'wait for the findings')
  .action(async (o: { appliance?: string; dryRun?: boolean; wait?: boolean }) => {
    await withClient(async (_c, t) => {
      const r = await reconcileNow(t.client, {
        applianceVmId: appliance(o),
        taskQueuePrefix: cfg.TASK_QUEUE_PREFIX,
        backend: cfg.EXPORT_BACKEND,
        dryRun: Boolean(o.dryRun),
        correlationTimeoutMs: cfg.CORRELATION_TIMEOUT_MS,
      });
      if (!o.wait) return out({ workflowId: r.workflowId, runId: r.runId });
      const res = await r.result();
      out(res, () => {
        for (const f of res.findings)
          console.log(`${f.kind.padEnd(28)} ${f.outcome.padEnd(10)} ${f.subject}\n    ${f.remedy}`);
        console.log(
          `${res.findings.length} findings, ${res.repaired} repaired, ${res.reported} reported, ${res.busy} busy`,
        );
      });
    });
  });

program
  .command('import-old')
  .description(
    "adopt the old volume daemon's mappings (read-only on its database); a dry run unless --apply, then reconcile maps and exports them",
  )
  .requiredOption('--from-db <name>', "the old daemon's database on the same server (e.g. migratekit_oma)")
  .option('--appliance <vmId>')
  .option('--apply', 'write the adopted rows (default: only print the plan)')
  .action(async (o: { fromDb: string; appliance?: string; apply?: boolean }) => {
    const applianceVmId = appliance(o);
    if (!applianceVmId)
      throw new InvalidRequestError([{ field: '--appliance', message: 'required (or APPLIANCE_VM_ID)' }]);
    const r = await withDb((db) =>
      importOldDatabase(db, {
        from: o.fromDb,
        applianceVmId,
        apply: Boolean(o.apply),
        ...(cfg.ENGINE_DB_NAME === o.fromDb ? { engine: engineRowsFor(cfg) } : {}),
      }),
    );
    out(r, () => {
      for (const d of r.adopted)
        if (d.action === 'adopt')
          console.log(
            `adopt    ${d.volumeId}  ${d.persistentName ?? '(named by the rule)'}  VM "${d.sourceVmName}" disk ${d.diskIndex}  ${d.location}`,
          );
      for (const d of r.skipped) if (d.action === 'skip') console.log(`skip     ${d.volumeId}  ${d.why}`);
      for (const v of r.present) console.log(`present  ${v}  (already ours)`);
      console.log(
        `${r.adopted.length} to adopt, ${r.skipped.length} skipped, ${r.present.length} already present` +
          (r.dryRun
            ? ' — dry run: nothing written; run again with --apply'
            : ' — written; now run: volumectl reconcile'),
      );
    });
  });

registerReleaseCommands(program); // doctor, --version

/**
 * Arguments that are not valid text: bytes that are not UTF-8 reach us as U+FFFD (Node replaces
 * them), and a lone surrogate cannot be stored. Refused before anything runs, naming the option.
 */
function textIssues(argv: string[]): { field: string; message: string }[] {
  const lone = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
  const out: { field: string; message: string }[] = [];
  for (const [i, arg] of argv.entries()) {
    const [opt, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    const value = inline ?? arg;
    const field =
      inline !== undefined ? opt! : argv[i - 1]?.startsWith('-') ? argv[i - 1]! : `argument ${i + 1}`;
    if (value.includes('\uFFFD'))
      out.push({ field, message: 'contains bytes that are not valid UTF-8 (shown as U+FFFD)' });
    else if (lone.test(value)) out.push({ field, message: 'must not contain a lone UTF-16 surrogate' });
  }
  return out;
}

const badText = textIssues(process.argv.slice(2));
const parsed = badText.length ? Promise.reject(new InvalidRequestError(badText)) : program.parseAsync();
parsed.catch((err: unknown) => {
  if (err instanceof InvalidRequestError) {
    if (json()) console.error(JSON.stringify({ error: { code: err.code, fields: err.issues } }));
    else for (const i of err.issues) console.error(`error: ${i.field}: ${i.message}`);
    process.exit(2);
  }
  if (err instanceof VolumeBusyError) {
    console.error(`error: ${err.message}`);
    process.exit(3);
  }
  console.error(`error: ${(err as Error).message}`);
  process.exit(1);
});
