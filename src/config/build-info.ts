import { readFileSync } from 'node:fs';
import { z } from 'zod';

/**
 * What this code is: a release carries `build-info.json` next to its package.json (written by
 * scripts/build); a checkout has none and reports its package.json version with `-dev`. Both
 * files sit two levels above this module in either layout (src/config/ → the root).
 */
export interface BuildInfo {
  version: string;
  /** Reported to Temporal by every worker (deployment version build id). */
  buildId: string;
  commit: string | null;
  builtAt: string | null;
  /** False in a checkout run through tsx. */
  release: boolean;
}

const buildInfoSchema = z.object({
  version: z.string().min(1),
  buildId: z.string().min(1),
  commit: z.string().nullable(),
  builtAt: z.string().nullable(),
});

let cached: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const root = new URL('../../', import.meta.url);
  let text: string | undefined;
  try {
    text = readFileSync(new URL('build-info.json', root), 'utf8');
  } catch {
    // A checkout: no build-info.json.
  }
  if (text !== undefined) {
    cached = { ...buildInfoSchema.parse(JSON.parse(text)), release: true };
  } else {
    const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { version: string };
    cached = {
      version: `${pkg.version}-dev`,
      buildId: `${pkg.version}-dev`,
      commit: null,
      builtAt: null,
      release: false,
    };
  }
  return cached;
}

/** The `--version` line every binary prints. */
export function versionLine(program: string): string {
  const b = buildInfo();
  return `${program} ${b.version}${b.commit ? ` (${b.commit.slice(0, 12)})` : ''}`;
}
