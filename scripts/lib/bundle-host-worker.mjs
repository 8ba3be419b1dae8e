// The release's host worker as one file: src/worker/host-main.bundle.js in the staged app
// (scripts/build). The appliance starts it under QEMU TCG in the lab and on small appliance VMs
// in the field, where loading ~700 modules one file at a time is most of its start-up; one file
// is one read and one compile. Beside the compiled tree, whose node_modules it still uses for
// what cannot be bundled: the Temporal core's native library, and the files the SDK resolves at
// run time by path. Only the control side ever bundles workflows (webpack, swc: left out).
//
//   node scripts/lib/bundle-host-worker.mjs APP_DIR
import { build } from 'esbuild';
import process from 'node:process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const app = path.resolve(process.argv[2] ?? '');
if (!process.argv[2]) throw new Error('usage: bundle-host-worker.mjs APP_DIR');

/**
 * The SDK resolves some of its own files by relative path at load (`require.resolve('../x')`);
 * from the bundle they would resolve beside it. Rewritten as package paths, they resolve in the
 * release's node_modules like any dependency.
 */
const sdkSelfPaths = {
  name: 'sdk-self-paths',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]@temporalio[\\/][^\\/]+[\\/].*\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const rel = path.relative(path.join(app, 'node_modules'), path.dirname(args.path));
      const contents = text.replace(/require\.resolve\((['"])(\.\.?\/[^'"]+)\1\)/g, (_m, q, spec) => {
        const target = path.posix.join(rel.split(path.sep).join('/'), spec);
        return `require.resolve(${q}${target}${q})`;
      });
      return { contents, loader: 'js' };
    });
  },
};

await build({
  entryPoints: [path.join(app, 'src/worker/host-main.js')],
  outfile: path.join(app, 'src/worker/host-main.bundle.js'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Native code, and the workflow bundler's toolchain (never loaded by a host worker).
  external: ['@temporalio/core-bridge', 'webpack', '@swc/core', 'swc-loader', 'source-map-loader'],
  // The bundle stands where host-main.js does, so its `import.meta.url` paths (build-info.json,
  // package.json two levels up) mean what they mean in the tree. CommonJS code in it gets a
  // `require` anchored at the app root, which resolves the externals in node_modules.
  banner: {
    js: "import { createRequire as __vlCreateRequire } from 'node:module'; const require = __vlCreateRequire(new URL('../../package.json', import.meta.url));",
  },
  plugins: [sdkSelfPaths],
  legalComments: 'none',
  logLevel: 'warning',
});
