import type { ConfiguredExport, ServedExport } from './types.js';

/**
 * Configuration vs the server's memory, by name. For nbd-server, `stale` is the list of names it
 * still serves after their .conf was deleted (SIGHUP only appends; a restart drops them) and
 * `notServed` the configured names it has not loaded yet. For nbdkit-dir the two only differ
 * by dangling links (device absent: configured, not served).
 */
export interface ExportComparison {
  both: string[];
  /** Served but not configured. */
  stale: string[];
  /** Configured but not served. */
  notServed: string[];
}

export function compareExports(configured: ConfiguredExport[], served: ServedExport[]): ExportComparison {
  const conf = new Set(configured.map((c) => c.exportName));
  const serv = new Set(served.map((s) => s.exportName));
  const sort = (a: string[]) => [...new Set(a)].sort();
  return {
    both: sort([...conf].filter((n) => serv.has(n))),
    stale: sort([...serv].filter((n) => !conf.has(n))),
    notServed: sort([...conf].filter((n) => !serv.has(n))),
  };
}
