// The one entry point of the installed services (their units' ExecStart) and tools:
//   node src/cli/service.js [--env-file FILE] host-worker | control-worker | api | migrate | volumectl [args]
//   node src/cli/service.js --version
// --env-file reads a systemd EnvironmentFile (values fill in variables not already set), so
// the installer and operators run a tool with exactly a service's settings.
import { existsSync, readFileSync } from 'node:fs';
import { versionLine } from '../config/build-info.js';
import { parseEnvFile } from '../config/env-file.js';
import { logFatalErrors } from '../worker/fatal.js';

const SERVICES: Record<string, string> = {
  'host-worker': '../worker/host-main.js',
  'control-worker': '../worker/control-main.js',
  api: '../api/main.js',
  migrate: './migrate.js',
  volumectl: './volumectl.js',
  healthcheck: './healthcheck.js',
};
const usage = `usage: volume-lifecycle [--env-file FILE] ${Object.keys(SERVICES).join('|')} [args] | --version`;

const args = process.argv.slice(2);
if (args[0] === '--env-file') {
  const file = args[1];
  if (!file) {
    console.error(usage);
    process.exit(2);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    console.error(`--env-file: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    process.exit(2);
  }
  for (const [k, v] of Object.entries(parseEnvFile(text))) process.env[k] ??= v;
  args.splice(0, 2);
}
const name = args[0];
if (name === '--version' || name === '-V') {
  console.log(versionLine('volume-lifecycle'));
  process.exit(0);
}
const main = name ? SERVICES[name] : undefined;
if (!main) {
  console.error(usage);
  process.exit(2);
}
// A release carries the host worker also as one file (scripts/build): the same code, one read
// and one compile instead of ~700 modules — what an appliance's start-up mostly is.
const bundled = name === 'host-worker' ? '../worker/host-main.bundle.js' : undefined;
const entry = bundled && existsSync(new URL(bundled, import.meta.url)) ? bundled : main;
// The program sees its own arguments where it expects them (after argv[1]).
process.argv.splice(2, process.argv.length - 2, ...args.slice(1));
if (name !== 'volumectl' && name !== 'healthcheck') logFatalErrors(`volume-lifecycle ${name}`);
await import(entry);
