import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnvFile } from '../../src/config/env-file.js';

/**
 * The release as an appliance gets it, for the tests that run it (release.test.ts, the lab):
 * built once per test run, installed with its own installer, started the way its unit says.
 */
const REPO = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The release tarball: RELEASE_ARTIFACT if given; else the one already built into
 * RELEASE_BUILD_DIR (scripts/test sets it, so one build serves every test file of a run); else
 * built now (`scripts/build --fast --no-typecheck`: gzip -1, and type errors are the lint job's).
 */
export async function releaseArtifact(): Promise<{ artifact: string; builtMs?: number }> {
  if (process.env.RELEASE_ARTIFACT) return { artifact: process.env.RELEASE_ARTIFACT };
  const dir = process.env.RELEASE_BUILD_DIR ?? (await mkdtemp(path.join(tmpdir(), 'vl-build-')));
  await mkdir(dir, { recursive: true });
  const built = (await readdir(dir)).find((f) => /^volume-lifecycle-.*\.tar\.gz$/.test(f));
  if (built) return { artifact: path.join(dir, built) };
  const t0 = Date.now();
  const r = await execa(path.join(REPO, 'scripts/build'), ['--out', dir, '--no-typecheck', '--fast'], {
    cwd: REPO,
    reject: false,
    all: true,
  });
  if (r.exitCode !== 0) throw new Error(`scripts/build failed:\n${r.all}`);
  return { artifact: r.stdout.trim().split('\n').pop()!, builtMs: Date.now() - t0 };
}

/** Unpack the tarball into `dir`; the release's top directory. */
export async function unpack(artifact: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await execa('tar', ['-xzf', artifact, '-C', dir]);
  const [top] = (await readdir(dir)).filter((d) => d.startsWith('volume-lifecycle-'));
  if (!top) throw new Error(`${artifact}: no volume-lifecycle-* directory inside`);
  return path.join(dir, top);
}

/**
 * `<release>/install --root ROOT [--role ROLE] --set K=V…`, with its output on failure. No role:
 * an upgrade, which keeps the role installed before.
 */
export async function installInto(
  app: string,
  root: string,
  role: string | undefined,
  sets: Record<string, string> = {},
) {
  const args = ['--root', root, ...(role ? ['--role', role] : [])];
  for (const [k, v] of Object.entries(sets)) args.push('--set', `${k}=${v}`);
  const r = await execa(path.join(app, 'install'), args, { all: true, reject: false });
  if (r.exitCode !== 0) throw new Error(`install ${args.join(' ')} failed:\n${r.all}`);
  return r;
}

export const UNIT_DIR = 'usr/local/lib/systemd/system';

/**
 * The unpacked release `app` under another version number, as the next release to upgrade to:
 * a hard-linked copy beside it with its own build-info.json (replaced, not written through the
 * link). Same code: what an upgrade does to running work, not what new code does (replay tests).
 */
export async function releaseAs(app: string, version: string): Promise<string> {
  const dir = path.join(path.dirname(app), `volume-lifecycle-${version}`);
  await execa('cp', ['-al', app, dir]);
  const f = path.join(dir, 'build-info.json');
  const info = JSON.parse(await readFile(f, 'utf8')) as Record<string, string>;
  await rm(f);
  await writeFile(f, JSON.stringify({ ...info, version, buildId: version }));
  return dir;
}

/**
 * A unit's command line and environment as systemd would give them, for a release installed
 * with `--root ROOT`: ExecStart (a plain command line; the installed system's paths moved under
 * ROOT), Environment= and the EnvironmentFile= contents, over PATH only.
 */
export async function fromUnit(
  root: string,
  unit: string,
): Promise<{ argv: string[]; env: Record<string, string> }> {
  const inRoot = (p: string) => path.join(root, p);
  const text = await readFile(inRoot(path.join(UNIT_DIR, unit)), 'utf8');
  const value = (key: string) =>
    [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
  const [execStart] = value('ExecStart');
  if (!execStart) throw new Error(`${unit} has no ExecStart`);
  if (/["'$\\]/.test(execStart))
    throw new Error(`${unit}: ExecStart is not a plain command line: ${execStart}`);
  const argv = execStart.split(/\s+/).map((a) => (a.startsWith('/opt/volume-lifecycle/') ? inRoot(a) : a));
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const line of value('Environment'))
    for (const kv of line.split(/\s+/)) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
  for (const f of value('EnvironmentFile')) {
    const file = inRoot(f.replace(/^-/, ''));
    if (!existsSync(file) && f.startsWith('-')) continue;
    Object.assign(env, parseEnvFile(await readFile(file, 'utf8')));
  }
  return { argv, env };
}

/**
 * The release installed into a scratch root on this machine (a lab guest sees it over 9p) with
 * `settings` given to the installer (`--set`, so its env file holds them), and one unit's
 * command line and environment from the installed files. PATH is left to the runner.
 */
export async function installedService(
  role: 'appliance' | 'control' | 'all',
  unit: string,
  settings: Record<string, string>,
): Promise<{
  argv: string[];
  env: Record<string, string>;
  version: string;
  root: string;
  /** The unpacked release it was installed from. */
  app: string;
  cleanup: () => Promise<void>;
}> {
  const work = await mkdtemp(path.join(tmpdir(), 'vl-installed-'));
  try {
    const { artifact } = await releaseArtifact();
    const app = await unpack(artifact, path.join(work, 'unpacked'));
    const root = path.join(work, 'root');
    await mkdir(root);
    await installInto(app, root, role, settings);
    const { argv, env } = await fromUnit(root, unit);
    delete env.PATH;
    return {
      argv,
      env,
      version: path.basename(app).replace(/^volume-lifecycle-/, ''),
      root,
      app,
      cleanup: () => rm(work, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}
