// Build time only (scripts/build): bundle the compiled workflows of a staged release into the
// file its workers load (`workflowBundle: { codePath }`). Run with the stage's own
// node_modules, so the bundle is made by the exact @temporalio/worker the release runs.
//   node <stage>/src/worker/prebuild-bundle.js
import { bundleWorkflowCode } from '@temporalio/worker';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { bundleOptions, PREBUILT_BUNDLE_PATH } from './bundle.js';

const workflowsPath = fileURLToPath(new URL('../../workflows/index.js', import.meta.url));
const started = Date.now();
const { code } = await bundleWorkflowCode(bundleOptions(workflowsPath));
await writeFile(PREBUILT_BUNDLE_PATH, code);
console.log(
  `workflow bundle: ${PREBUILT_BUNDLE_PATH} (${(code.length / 1024).toFixed(0)} KiB, ${Date.now() - started} ms)`,
);
