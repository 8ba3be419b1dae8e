import type { Pool } from 'mysql2/promise';
import type { VolumeLifecycleClient } from '../client/index.js';
import type { ServedExport } from '../nbd/types.js';
import type { EngineRows } from '../engine-contract/engine-rows.js';

/** What the HTTP API runs on. Both versions start every operation through `volumes`. */
export interface ApiDeps {
  volumes: VolumeLifecycleClient;
  db: Pool;
  /** The engine's rows (ENGINE_DB_NAME): snapshot tracking keeps them in its transaction. */
  engine?: EngineRows;
  /** The appliance this API serves by default (APPLIANCE_VM_ID). */
  applianceVmId: string;
  /** Every other appliance VM id at the site (APPLIANCE_VM_IDS); see /api/v1 attach. */
  applianceVmIds?: readonly string[];
  /** Bearer token for mutating routes (API_TOKEN); empty refuses every token. */
  token: string;
  /** The address the server is configured to listen on (API_HOST): part of the v1 trust rule. */
  listenHost?: string;
  /** API_V1_TRUST_LOOPBACK (default true). */
  v1TrustLoopback?: boolean;
  /** The NBD port replication connects to (NBD_PORT), reported by /api/v1/exports. */
  nbdPort?: number;
  /** Reported by GET /health; default this package's version. */
  version?: string;
  /** The NBD server's export list over the protocol (for /exports/validate). */
  servedExports?: () => Promise<ServedExport[]>;
  /** Start a reconcile pass now (for /admin/force-sync and /exports/cleanup). */
  startReconcile?: (dryRun: boolean) => Promise<{ workflowId: string; runId: string }>;
  health?: Record<string, () => Promise<unknown>>;
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

/** Each probe in `health` plus the database; `ok` only when all answer. */
export async function runHealthChecks(deps: ApiDeps) {
  const checks: Record<string, { ok: boolean; error?: string }> = {};
  for (const [name, probe] of Object.entries({
    database: () => deps.db.query('SELECT 1'),
    ...(deps.health ?? {}),
  })) {
    try {
      await probe();
      checks[name] = { ok: true };
    } catch (err) {
      checks[name] = { ok: false, error: (err as Error).message };
    }
  }
  return { ok: Object.values(checks).every((c) => c.ok), checks };
}
