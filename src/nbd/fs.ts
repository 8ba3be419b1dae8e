import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

/**
 * The few filesystem operations the export backends need, behind an interface so that a lab
 * can run them where the NBD server runs. `localFs` is this machine.
 */
export type EntryKind = 'symlink' | 'file' | 'dir' | 'other';

export interface ExportFs {
  mkdirp(dir: string): Promise<void>;
  /** Entries of a directory with their lstat kind; a missing directory is empty. */
  list(dir: string): Promise<{ name: string; kind: EntryKind }[]>;
  /** lstat kind, or undefined when nothing is there. */
  kindOf(p: string): Promise<EntryKind | undefined>;
  /** Symlink target as stored, or undefined when nothing is there. Throws if not a symlink. */
  readlink(p: string): Promise<string | undefined>;
  /** Create a symlink at `linkPath` → `target`, replacing whatever link is there, atomically. */
  replaceSymlink(target: string, linkPath: string, stagingDir: string): Promise<void>;
  /** Contents, or undefined when the file does not exist. */
  readText(p: string): Promise<string | undefined>;
  /** Write to a temp name in `stagingDir` (fsync'd), then rename onto `p`. */
  replaceText(p: string, data: string, stagingDir: string): Promise<void>;
  /** Unlink; false when it was not there. */
  remove(p: string): Promise<boolean>;
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === code;
}

function kindFromStats(st: {
  isSymbolicLink(): boolean;
  isFile(): boolean;
  isDirectory(): boolean;
}): EntryKind {
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  return 'other';
}

function tempName(base: string): string {
  // Never ends in `.conf` (nbd-server includedir reads only *.conf) and starts with a dot.
  return `.${base}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export const localFs: ExportFs = {
  async mkdirp(dir) {
    await fsp.mkdir(dir, { recursive: true });
  },
  async list(dir) {
    try {
      const ents = await fsp.readdir(dir, { withFileTypes: true });
      return ents.map((d) => ({ name: d.name, kind: kindFromStats(d) }));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return [];
      throw e;
    }
  },
  async kindOf(p) {
    try {
      return kindFromStats(await fsp.lstat(p));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    }
  },
  async readlink(p) {
    try {
      return await fsp.readlink(p);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    }
  },
  async replaceSymlink(target, linkPath, stagingDir) {
    await fsp.mkdir(stagingDir, { recursive: true });
    const tmp = path.join(stagingDir, tempName(path.basename(linkPath)));
    await fsp.symlink(target, tmp);
    try {
      // rename(2) replaces the destination atomically: a reader sees the old or the new link.
      await fsp.rename(tmp, linkPath);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  },
  async readText(p) {
    try {
      return await fsp.readFile(p, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    }
  },
  async replaceText(p, data, stagingDir) {
    await fsp.mkdir(stagingDir, { recursive: true });
    const tmp = path.join(stagingDir, tempName(path.basename(p)));
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fsp.rename(tmp, p);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  },
  async remove(p) {
    try {
      await fsp.unlink(p);
      return true;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false;
      throw e;
    }
  },
};
