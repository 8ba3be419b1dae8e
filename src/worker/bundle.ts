import {
  bundleWorkflowCode,
  type BundleOptions,
  type WorkflowBundleOption,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));

/**
 * A release carries the workflow bundle prebuilt at build time (scripts/build), two levels above
 * this module like package.json: workers then start without webpack. A checkout (this file run
 * as .ts through tsx) bundles the sources at start instead.
 */
export const PREBUILT_BUNDLE_PATH = fileURLToPath(new URL('../../workflow-bundle.js', import.meta.url));
const compiled = import.meta.url.endsWith('.js');

/** Modules that do I/O must never reach the bundle; workflows import activities by type only. */
export const BUNDLE_IGNORE_MODULES = ['mysql2', 'mysql2/promise', 'execa', 'pino', 'umzug'];

export function bundleOptions(workflowsPath: string): BundleOptions {
  return {
    workflowsPath,
    ignoreModules: BUNDLE_IGNORE_MODULES,
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: (m) => console.error(m), log() {} },
  };
}

let cached: Promise<WorkflowBundleWithSourceMap> | undefined;

/** Bundle the workflow sources once per process (checkouts, tests, replay). */
export function bundleFromSource(): Promise<WorkflowBundleWithSourceMap> {
  cached ??= bundleWorkflowCode(bundleOptions(WORKFLOWS_PATH));
  return cached;
}

/** What Worker.create gets: the release's prebuilt bundle, else the sources bundled now. */
export async function workflowBundle(): Promise<WorkflowBundleOption> {
  if (compiled) {
    // Compiled code without its bundle is a broken release: say so rather than run webpack.
    if (!existsSync(PREBUILT_BUNDLE_PATH))
      throw new Error(
        `workflow bundle missing: ${PREBUILT_BUNDLE_PATH} (rebuild the release with scripts/build)`,
      );
    return { codePath: PREBUILT_BUNDLE_PATH };
  }
  return bundleFromSource();
}
