import type { ExportBackendKind } from '../domain/mapping.js';

/**
 * An NBD export backend: how `migration-vol-<name>` comes to be served from
 * `/dev/mapper/<name>`. Backends: nbdkit directory of symlinks (default), nbd-server conf.d.
 */
export interface ExportSpec {
  exportName: string; // migration-vol-<persistent name>
  targetPath: string; // /dev/mapper/<persistent name>
}

export interface ConfiguredExport extends ExportSpec {
  /** Where the backend keeps it (symlink path or .conf path). */
  configPath: string;
}

export interface ServedExport {
  exportName: string;
  /** Size from NBD_OPT_GO, when probed. */
  sizeBytes?: number;
}

export type ProbeResult =
  | { ok: true; sizeBytes: number }
  | {
      ok: false;
      reason: 'unknown-export' | 'access-denied' | 'connection-failed' | 'other';
      message: string;
    };

export interface ExportBackend {
  readonly kind: ExportBackendKind;
  /** Make the export serve targetPath. Returns whether anything changed (false = already so). */
  ensure(spec: ExportSpec): Promise<{ created: boolean; changed: boolean; configPath: string }>;
  /** Remove the export; missing → success. */
  remove(exportName: string): Promise<{ removed: boolean }>;
  /** What the backend's configuration says (files / symlinks). */
  listConfigured(): Promise<ConfiguredExport[]>;
  /** One export's configuration, if any: read where `ensure` writes it, nothing else. */
  configured(exportName: string): Promise<ConfiguredExport | undefined>;
  /** What the running server says over the NBD protocol (NBD_OPT_LIST). */
  listServed(): Promise<ServedExport[]>;
  /** Open one export (NBD_OPT_GO) and report its size or why it failed. */
  probe(exportName: string): Promise<ProbeResult>;
  /** nbd:// URI clients use for this export. */
  uriFor(exportName: string): string;
}
