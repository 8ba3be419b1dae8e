import * as path from 'node:path';
import { z } from 'zod';

/**
 * A path that may reach a file name, a symlink or a config value (an export's target, a device
 * path): absolute, normalised, no `..`, and a conservative alphabet — GLib unescapes `\`
 * sequences in key-file values and strips blanks, and a newline would start a new key.
 */
export const TARGET_PATH_MAX = 1024;

export const targetPathSchema = z
  .string()
  .max(TARGET_PATH_MAX, `must be at most ${TARGET_PATH_MAX} characters`)
  .regex(/^\/[A-Za-z0-9._+@:/-]*$/, 'must be an absolute path of letters, digits and . _ + @ : / -')
  .refine((p) => !p.split('/').includes('..'), 'must not contain a ".." component')
  .refine(
    (p) => path.posix.normalize(p) === p && (p === '/' || !p.endsWith('/')),
    'must be a normalised path',
  );
