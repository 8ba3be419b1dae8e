import { z } from 'zod';
import { exportNameSchema } from '../domain/naming.js';
import { targetPathSchema } from '../domain/paths.js';
import type { ExportSpec } from './types.js';

/**
 * Everything that ends up in a file name, a symlink, an nbd-server section header (`[name]`) or a
 * GLib key-file value (`exportname = path`) goes through these schemas first, so nothing can
 * inject a section, a key or a path component. Export names use the domain schema
 * (`migration-vol-` + lower-case letters, digits, `-`; which already excludes newline, `]`,
 * `=`, `/`, `.`, spaces). Paths are absolute, normalised, no `..`, and drawn from a conservative
 * alphabet: GLib unescapes `\` sequences in values and strips leading/trailing blanks, and a
 * newline would start a new key.
 */
export const exportSpecSchema = z.object({
  exportName: exportNameSchema,
  targetPath: targetPathSchema,
});

/**
 * A rejected input; `field` names what was wrong (`exportName`, `targetPath`, `port`, …).
 * Never retryable: the same input fails the same way (activities/failures.ts reads `retryable`).
 */
export class NbdValidationError extends Error {
  readonly retryable = false;
  constructor(
    public readonly field: string,
    public readonly detail: string,
  ) {
    super(`invalid ${field}: ${detail}`);
    this.name = 'NbdValidationError';
  }
}

function fail(err: z.ZodError, fallbackField: string): never {
  const issue = err.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.join('.') : fallbackField;
  throw new NbdValidationError(field, issue?.message ?? 'invalid');
}

export function validateExportSpec(spec: ExportSpec): ExportSpec {
  const r = exportSpecSchema.safeParse(spec);
  if (!r.success) fail(r.error, 'exportSpec');
  return r.data;
}

export function validateExportName(name: string): string {
  const r = exportNameSchema.safeParse(name);
  if (!r.success) fail(r.error, 'exportName');
  return r.data;
}

export function validatePath(value: string, field: string): string {
  const r = targetPathSchema.safeParse(value);
  if (!r.success) fail(r.error, field);
  return r.data;
}
