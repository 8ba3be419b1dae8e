import { bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));

let cached: Promise<WorkflowBundleWithSourceMap> | undefined;

/**
 * Bundle the workflow code once per process. Modules that do I/O must never reach the bundle;
 * workflows import activities by type only, and these are excluded outright as a guard.
 */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  cached ??= bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    ignoreModules: ['mysql2', 'mysql2/promise', 'execa', 'pino', 'umzug'],
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: (m) => console.error(m), log() {} },
  });
  return cached;
}
