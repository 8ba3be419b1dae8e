/**
 * Builds the appliance lab's initramfs at run time from what is installed on this machine:
 * a static busybox, the handful of kernel modules needed to mount the host's root over 9p, and a
 * generated `/init`. Nothing binary is committed; the result is cached outside the repo, keyed by
 * kernel version and a hash of everything that goes into the archive's text parts.
 *
 * Inside the guest, /init mounts the host's `/` read-only over virtio-9p, puts a tmpfs overlay on
 * it, and from then on runs the host's own programs (modprobe, udevd, qemu-ga, node, dmsetup…)
 * chrooted into that overlay. PID 1 stays the busybox shell from the initramfs.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { execa } from 'execa';

/** Modules the initramfs itself needs (their dependencies are resolved from modules.dep). */
export const INITRAMFS_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay'] as const;
/** Modules loaded after the switch into the host root, with the host's own modprobe. */
export const GUEST_MODULES = ['virtio_console', 'virtio_net', 'virtio_blk', 'dm_mod', 'loop', 'nbd'] as const;

export const READY_MARKER = 'LAB-READY';
export const QGA_PORT_NAME = 'org.qemu.guest_agent.0';
/** Where /init leaves the lab's guest-side helpers (inside the guest's tmpfs /run). */
export const GUEST_LAB_DIR = '/run/lab';
export const GUEST_SPAWN_HELPER = `${GUEST_LAB_DIR}/spawn`;
export const GUEST_BUSYBOX = `${GUEST_LAB_DIR}/busybox`;
export const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface KernelChoice {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

export interface InitramfsOptions {
  kernel: KernelChoice;
  /** Start the host's systemd-udevd in the guest (default true; skipped if not installed). */
  udev?: boolean;
  /** 9p cache mode for the host root (default 'none': host edits are seen at once; 'loose' measured no faster). */
  ninePCache?: 'none' | 'loose' | 'mmap' | 'fscache';
  cacheDir?: string;
  /** Path of a static busybox (default: found in PATH / usual places). */
  busybox?: string;
}

export interface BuiltInitramfs {
  path: string;
  kernel: KernelChoice;
  cached: boolean;
  key: string;
}

/** `$XDG_CACHE_HOME/volume-lifecycle/lab` or `~/.cache/volume-lifecycle/lab`. */
export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'volume-lifecycle', 'lab');
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/**
 * Picks a kernel from /boot that has a matching /lib/modules tree: the running one if it is
 * there, otherwise the newest. `LAB_KERNEL_VERSION` (or the argument) forces a version.
 */
export async function findKernel(
  opts: { version?: string; bootDir?: string; modulesRoot?: string } = {},
): Promise<KernelChoice> {
  const bootDir = opts.bootDir ?? '/boot';
  const modulesRoot = opts.modulesRoot ?? '/lib/modules';
  const wanted = opts.version ?? process.env.LAB_KERNEL_VERSION;
  const entries = await readdir(bootDir).catch(() => [] as string[]);
  const candidates: KernelChoice[] = [];
  for (const e of entries) {
    const m = /^vmlinuz-(.+)$/.exec(e);
    if (!m?.[1]) continue;
    const version = m[1];
    const modulesDir = path.join(modulesRoot, version);
    if (!existsSync(path.join(modulesDir, 'modules.dep'))) continue;
    candidates.push({ version, vmlinuz: path.join(bootDir, e), modulesDir });
  }
  if (candidates.length === 0) {
    throw new Error(
      `no kernel in ${bootDir} with modules in ${modulesRoot} (install linux-image-amd64 for the lab)`,
    );
  }
  if (wanted) {
    const k = candidates.find((c) => c.version === wanted);
    if (!k)
      throw new Error(`kernel ${wanted} not found; have ${candidates.map((c) => c.version).join(', ')}`);
    return k;
  }
  const running = os.release();
  const same = candidates.find((c) => c.version === running);
  if (same) return same;
  candidates.sort((a, b) => compareVersions(b.version, a.version));
  return candidates[0]!;
}

interface ModuleEntry {
  rel: string;
  deps: string[];
}

const modKey = (name: string) => name.replace(/-/g, '_');

function moduleNameOf(rel: string): string {
  return modKey(path.basename(rel).replace(/\.ko(\.(xz|gz|zst))?$/, ''));
}

/** Module files (relative to modulesDir) in load order: dependencies first. */
export async function resolveModules(modulesDir: string, wanted: readonly string[]): Promise<string[]> {
  const dep = await readFile(path.join(modulesDir, 'modules.dep'), 'utf8');
  const builtin = await readFile(path.join(modulesDir, 'modules.builtin'), 'utf8').catch(() => '');
  const byName = new Map<string, ModuleEntry>();
  const byRel = new Map<string, ModuleEntry>();
  for (const line of dep.split('\n')) {
    const idx = line.indexOf(':');
    if (idx < 0) continue;
    const rel = line.slice(0, idx).trim();
    const deps = line
      .slice(idx + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    const e = { rel, deps };
    byName.set(moduleNameOf(rel), e);
    byRel.set(rel, e);
  }
  const builtins = new Set(
    builtin
      .split('\n')
      .filter(Boolean)
      .map((l) => moduleNameOf(l)),
  );
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (e: ModuleEntry) => {
    if (seen.has(e.rel)) return;
    seen.add(e.rel);
    // modules.dep lists the transitive closure; the last entries are the most basic ones.
    for (const d of [...e.deps].reverse()) {
      const de = byRel.get(d);
      if (de) visit(de);
    }
    order.push(e.rel);
  };
  for (const w of wanted) {
    const e = byName.get(modKey(w));
    if (!e) {
      if (builtins.has(modKey(w))) continue;
      throw new Error(`kernel module ${w} not found in ${modulesDir}`);
    }
    visit(e);
  }
  return order;
}

async function decompressModule(file: string): Promise<Buffer> {
  if (file.endsWith('.ko')) return readFile(file);
  if (file.endsWith('.ko.gz')) return gunzipSync(await readFile(file));
  const tool = file.endsWith('.ko.xz') ? ['xz', '-dc'] : file.endsWith('.ko.zst') ? ['zstd', '-dc'] : null;
  if (!tool) throw new Error(`unknown module compression: ${file}`);
  const r = await execa(tool[0]!, [tool[1]!, file], { encoding: 'buffer', stripFinalNewline: false });
  return Buffer.from(r.stdout);
}

export async function findBusybox(explicit?: string): Promise<string> {
  const candidates = explicit
    ? [explicit]
    : [
        ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'busybox')),
        '/bin/busybox',
        '/usr/bin/busybox',
      ];
  for (const c of candidates) {
    if (!c || !existsSync(c)) continue;
    // Must be static: the initramfs has no libc. `file` may be missing, so look for PT_INTERP.
    const head = await readFile(c);
    if (head.includes(Buffer.from('/lib64/ld-linux')) || head.includes(Buffer.from('/lib/ld-linux')))
      continue;
    return c;
  }
  throw new Error('no static busybox found (apt-get install busybox-static)');
}

// ---------------------------------------------------------------------------------------------
// cpio "newc" writer

type CpioEntry =
  | { kind: 'dir'; name: string; mode?: number }
  | { kind: 'file'; name: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; name: string; target: string }
  | { kind: 'chardev'; name: string; major: number; minor: number; mode?: number };

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

export function buildCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (
    name: string,
    mode: number,
    data: Buffer,
    rdev: { major: number; minor: number } = { major: 0, minor: 0 },
  ) => {
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [
      ino++,
      mode,
      0, // uid
      0, // gid
      1, // nlink
      0, // mtime: fixed, so the archive is reproducible
      data.length,
      0, // devmajor
      0, // devminor
      rdev.major,
      rdev.minor,
      nameBuf.length,
      0, // check
    ];
    const header = '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
    parts.push(Buffer.from(header, 'ascii'), nameBuf, Buffer.alloc(pad4(110 + nameBuf.length)));
    parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    switch (e.kind) {
      case 'dir':
        push(e.name, 0o040000 | (e.mode ?? 0o755), Buffer.alloc(0));
        break;
      case 'file':
        push(e.name, 0o100000 | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        push(e.name, 0o120000 | 0o777, Buffer.from(e.target));
        break;
      case 'chardev':
        push(e.name, 0o020000 | (e.mode ?? 0o600), Buffer.alloc(0), e);
        break;
    }
  }
  ino = 0;
  push('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// The guest's /init and helpers (busybox sh; these run only inside the lab VM)

export const GUEST_STAGE2 = `${GUEST_LAB_DIR}/stage2`;

/**
 * Stage 1 (/init in the initramfs): modules for 9p/overlay, mount the host root read-only with a
 * tmpfs overlay, move /proc /sys /dev over, and switch_root into it. No chroot is left behind
 * (systemd tools refuse to act "in a chroot"; the kernel's module loader must find modprobe).
 */
export function initScript(o: { ninePCache: string }): string {
  return `#!/bin/busybox sh
# /init of the volume-lifecycle appliance lab (generated by harness/lab/initramfs.ts).
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
log() { echo "lab-init[$(cut -d' ' -f1 /proc/uptime)]: $*"; }
fail() { log "FATAL: $*"; echo LAB-FAILED; sleep 1; poweroff -f; }
log "kernel $(uname -r), loading 9p/overlay modules"
for m in $(cat /lab/modules.order); do insmod "/lab/modules/$m" || log "insmod $m failed"; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=${o.ninePCache} hostroot /lower || fail "9p mount"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay"
R=/newroot
for d in proc sys dev tmp run; do mkdir -p "$R/$d"; done
mount -t tmpfs -o mode=0755 tmpfs $R/run || fail "tmpfs /run"
mkdir -p $R${GUEST_LAB_DIR}
cp /bin/busybox $R${GUEST_BUSYBOX}
cp /lab/spawn $R${GUEST_SPAWN_HELPER}
cp /lab/stage2 $R${GUEST_STAGE2}
chmod 0755 $R${GUEST_BUSYBOX} $R${GUEST_SPAWN_HELPER} $R${GUEST_STAGE2}
mount --move /proc $R/proc
mount --move /sys $R/sys
mount --move /dev $R/dev
log "host root mounted, switching to it"
exec switch_root $R ${GUEST_BUSYBOX} sh ${GUEST_STAGE2}
fail "switch_root"
`;
}

/** Stage 2: PID 1 in the host's root. Modules, network, udev, qemu-ga, then reap forever. */
export function stage2Script(o: { udev: boolean }): string {
  return `# stage 2 of the appliance lab's init (generated by harness/lab/initramfs.ts); PID 1.
BB=${GUEST_BUSYBOX}
export PATH=${GUEST_PATH}
export HOME=/root LANG=C.UTF-8
log() { echo "lab-init[$($BB cut -d' ' -f1 /proc/uptime)]: $*"; }
fail() { log "FATAL: $*"; echo LAB-FAILED; $BB sleep 1; $BB poweroff -f; }
$BB mkdir -p /dev/pts /dev/shm
$BB mount -t devpts devpts /dev/pts
$BB mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp stays the overlay's view of the host's /tmp (writes land in the overlay's tmpfs): a
# checkout under the host's /tmp (CI clones, temp worktrees) must be visible to guest workers.
$BB hostname lab-appliance
log "loading ${GUEST_MODULES.join(' ')}"
for m in ${GUEST_MODULES.join(' ')}; do modprobe "$m" 2>/dev/null || $BB modprobe "$m" || log "modprobe $m failed"; done
$BB ip link set lo up
{ $BB ip link set eth0 up && $BB ip addr add 10.0.2.15/24 dev eth0 && $BB ip route add default via 10.0.2.2; } || log "network setup failed"
${
  o.udev
    ? `if [ -x /lib/systemd/systemd-udevd ]; then
  log "starting udevd"
  /lib/systemd/systemd-udevd --daemon --resolve-names=never || log "udevd failed"
  udevadm trigger --action=add --subsystem-match=block --subsystem-match=virtio-ports --subsystem-match=misc || true
  udevadm settle --timeout=60 || log "udevadm settle timed out"
fi`
    : '# udev disabled'
}
QGA_DEV=
for p in /sys/class/virtio-ports/*; do
  [ "$($BB cat "$p/name" 2>/dev/null)" = "${QGA_PORT_NAME}" ] && QGA_DEV=/dev/$($BB basename "$p")
done
[ -n "$QGA_DEV" ] || fail "no virtio port ${QGA_PORT_NAME}"
command -v qemu-ga >/dev/null || fail "qemu-ga not installed on the host (apt-get install qemu-guest-agent)"
$BB mkdir -p /run/qga
(
  while :; do
    qemu-ga -m virtio-serial -p "$QGA_DEV" -t /run/qga -f /run/qga/qemu-ga.pid </dev/null
    log "qemu-ga exited ($?), restarting"
    $BB sleep 1
  done
) &
log "agent started on $QGA_DEV"
echo ${READY_MARKER}
# PID 1: reap whatever gets orphaned, forever.
while :; do wait; $BB sleep 5; done
`;
}

/**
 * Guest-side launcher for long-running processes: `spawn <logfile> <cwd> <argv…>`.
 * The command's argv is passed through untouched ("$@"); only this fixed script is shell.
 */
export function spawnHelperScript(): string {
  return `#!${GUEST_BUSYBOX} sh
log="$1"; cwd="$2"; shift 2
cd "$cwd" || exit 127
exec "$@" >>"$log" 2>&1 </dev/null
`;
}

export async function buildInitramfs(opts: InitramfsOptions): Promise<BuiltInitramfs> {
  const { kernel } = opts;
  const init = initScript({ ninePCache: opts.ninePCache ?? 'none' });
  const stage2 = stage2Script({ udev: opts.udev ?? true });
  const spawn = spawnHelperScript();
  const busybox = await findBusybox(opts.busybox);
  const modules = await resolveModules(kernel.modulesDir, INITRAMFS_MODULES);
  const bbStat = await stat(busybox);
  const hash = createHash('sha256')
    .update(init)
    .update(spawn)
    .update(stage2)
    .update(modules.join('\n'))
    .update(`${busybox}:${bbStat.size}:${bbStat.mtimeMs}`)
    .digest('hex')
    .slice(0, 16);
  const key = `${kernel.version}-${hash}`;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const out = path.join(cacheDir, `initramfs-${key}.cpio.gz`);
  if (existsSync(out)) return { path: out, kernel, cached: true, key };

  const entries: CpioEntry[] = [
    { kind: 'dir', name: 'bin' },
    { kind: 'dir', name: 'dev' },
    { kind: 'chardev', name: 'dev/console', major: 5, minor: 1 },
    { kind: 'chardev', name: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'dir', name: 'proc' },
    { kind: 'dir', name: 'sys' },
    { kind: 'dir', name: 'lab' },
    { kind: 'dir', name: 'lab/modules' },
    { kind: 'file', name: 'bin/busybox', data: await readFile(busybox), mode: 0o755 },
    { kind: 'symlink', name: 'bin/sh', target: 'busybox' },
    { kind: 'file', name: 'init', data: Buffer.from(init), mode: 0o755 },
    { kind: 'file', name: 'lab/spawn', data: Buffer.from(spawn), mode: 0o755 },
    { kind: 'file', name: 'lab/stage2', data: Buffer.from(stage2), mode: 0o755 },
  ];
  const order: string[] = [];
  for (const rel of modules) {
    const name = path.basename(rel).replace(/\.(xz|gz|zst)$/, '');
    entries.push({
      kind: 'file',
      name: `lab/modules/${name}`,
      data: await decompressModule(path.join(kernel.modulesDir, rel)),
    });
    order.push(name);
  }
  entries.push({ kind: 'file', name: 'lab/modules.order', data: Buffer.from(order.join('\n') + '\n') });

  await mkdir(cacheDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  await writeFile(tmp, gzipSync(buildCpio(entries), { level: 6 }));
  await rename(tmp, out);
  return { path: out, kernel, cached: false, key };
}
