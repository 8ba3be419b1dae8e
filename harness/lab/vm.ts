/**
 * The appliance lab VM: QEMU (TCG) booting the installed Debian kernel with the generated
 * initramfs; the guest runs this machine's own userland over a read-only 9p root, with real
 * device-mapper, loop, NBD and udev. Commands run in it through qemu-ga (QgaRunner); disks are
 * hot-plugged over QMP.
 *
 * Networking is user-mode (slirp) with restrict=on: the guest reaches nothing but the explicit
 * guest forwards to host loopback, and the host reaches the guest only through hostfwd on
 * 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { CommandResult } from '../../src/command/runner.js';
import {
  GUEST_BUSYBOX,
  GUEST_SPAWN_HELPER,
  READY_MARKER,
  buildInitramfs,
  findKernel,
  type KernelChoice,
} from './initramfs.js';
import { QgaClient, QgaRunner, guestEnv } from './qga.js';
import { QmpClient, QmpError } from './qmp.js';

/** hostfwd: 127.0.0.1:<hostPort> on this machine → <guestPort> in the guest. */
export interface HostForward {
  /** 0 or omitted: pick a free port. */
  hostPort?: number;
  guestPort: number;
}

/** guestfwd: <guestAddr>:<guestPort> in the guest → <hostAddr>:<hostPort> on host loopback. */
export interface GuestForward {
  /** An address in the slirp network 10.0.2.0/24 (default 10.0.2.100). */
  guestAddr?: string;
  guestPort: number;
  /** Loopback only (default 127.0.0.1). */
  hostAddr?: string;
  hostPort: number;
}

export interface LabOptions {
  memoryMiB?: number;
  cpus?: number;
  /** Kernel version from /boot to boot (default: running kernel if installed, else newest). */
  kernelVersion?: string;
  udev?: boolean;
  ninePCache?: 'none' | 'loose' | 'mmap' | 'fscache';
  /** NBD port inside the guest that `guestNbdPort` forwards to (default 10809). */
  nbdGuestPort?: number;
  /** Host port forwarded to the guest's NBD port (default: a free one). */
  nbdHostPort?: number;
  /**
   * Temporal forward: the guest reaches `guestAddr:guestPort` (default 10.0.2.100:7233) and lands
   * on 127.0.0.1:hostPort (default: port of a loopback TEMPORAL_ADDRESS, else 7233). false: none.
   */
  temporal?: false | { hostPort?: number; guestAddr?: string; guestPort?: number };
  hostForwards?: HostForward[];
  guestForwards?: GuestForward[];
  bootTimeoutMs?: number;
  /** Parent of the per-lab temp dir (default os.tmpdir()). */
  tmpRoot?: string;
  /** Keep the temp dir (console log, sockets) after close, for diagnostics. */
  keepWorkDir?: boolean;
  cacheDir?: string;
  qemuBinary?: string;
  extraQemuArgs?: string[];
  /** Called with console lines as they are written (diagnostics). */
  onConsole?: (line: string) => void;
}

export interface HotplugRequest {
  /** QEMU device id (letters, digits, '-', '_', '.'; starts with a letter; ≤ 27 chars). */
  id: string;
  /** Absolute path of a raw image file on this machine. */
  file: string;
  /** virtio-blk serial (≤ 20 bytes), what the guest sees in /sys/block/vdX/serial. */
  serial: string;
  readOnly?: boolean;
}

export interface GuestProcess {
  pid: number;
  logFile: string;
  /** exited=false while running; exit code (or 128+signal) once it has ended. */
  status(): Promise<{ exited: boolean; exitCode?: number }>;
  readLog(): Promise<string>;
  /** Poll the log until it matches (fails early if the process exits). */
  waitForLog(pattern: RegExp, timeoutMs: number): Promise<string>;
  kill(signal?: 'TERM' | 'KILL' | 'INT'): Promise<void>;
}

export interface Lab {
  readonly runner: QgaRunner;
  readonly qga: QgaClient;
  readonly qmp: QmpClient;
  readonly kernel: KernelChoice;
  /** Host port (on 127.0.0.1) forwarded to the guest's NBD port. */
  readonly guestNbdPort: number;
  readonly hostForwards: { hostPort: number; guestPort: number }[];
  /** Address the guest uses for the host's Temporal, e.g. 10.0.2.100:7233 (undefined if disabled). */
  readonly guestTemporalAddress: string | undefined;
  readonly workDir: string;
  readonly consoleLog: string;
  readonly pid: number;
  readonly bootMs: number;
  hotplug(req: HotplugRequest): Promise<void>;
  unplug(id: string, opts?: { timeoutMs?: number }): Promise<void>;
  exec(argv: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<CommandResult>;
  /** exec, throwing on a non-zero exit; returns stdout. */
  execOk(argv: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** Kernel name (vdX) of the guest disk with this serial, or undefined. */
  findGuestDisk(serial: string): Promise<string | undefined>;
  /** Poll the guest until a disk with this serial shows up; returns its kernel name. */
  waitForGuestDisk(serial: string, timeoutMs?: number): Promise<string>;
  waitForGuestDiskGone(serial: string, timeoutMs?: number): Promise<void>;
  spawnInGuest(
    argv: readonly string[],
    opts?: { env?: Record<string, string>; logFile?: string; cwd?: string },
  ): Promise<GuestProcess>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const DEFAULT_GUEST_TEMPORAL = '10.0.2.100';

function checkPort(p: number, what: string): number {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`${what}: invalid port ${p}`);
  return p;
}

function isLoopbackV4(a: string): boolean {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(a);
  return !!m && m.slice(1).every((o) => Number(o) <= 255);
}

function isSlirpGuestAddr(a: string): boolean {
  const m = /^10\.0\.2\.(\d{1,3})$/.exec(a);
  // .2 gateway, .3 DNS, .15 the guest itself: keep forwards off those.
  return !!m && Number(m[1]) <= 254 && ![0, 2, 3, 15].includes(Number(m[1]));
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function findInPath(bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (d && existsSync(path.join(d, bin))) return path.join(d, bin);
  }
  return undefined;
}

function defaultTemporalHostPort(): number {
  const addr = process.env.TEMPORAL_ADDRESS;
  const m = addr ? /^(127\.[\d.]+|localhost):(\d+)$/.exec(addr) : null;
  return m?.[2] ? Number(m[2]) : 7233;
}

// --- cleanup of every live lab on process exit or fatal signals ------------------------------

const live = new Set<LabVm>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let hooksInstalled = false;

function onExit(): void {
  for (const l of live) l.killSync();
}

function onSignal(sig: NodeJS.Signals): void {
  // Someone else handles it (the demo's orderly stop): they close the labs, in order, after the
  // workers that use them; the exit hook still kills whatever is left.
  if (process.listenerCount(sig) > 1) return;
  onExit();
  uninstallHooks();
  // Nobody else handles it: restore the default action (terminate with that signal).
  process.kill(process.pid, sig);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.removeListener('exit', onExit);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

// ---------------------------------------------------------------------------------------------

class LabVm implements Lab {
  runner!: QgaRunner;
  qga!: QgaClient;
  qmp!: QmpClient;
  kernel!: KernelChoice;
  guestNbdPort = 0;
  hostForwards: { hostPort: number; guestPort: number }[] = [];
  guestTemporalAddress: string | undefined;
  workDir = '';
  consoleLog = '';
  pid = 0;
  bootMs = 0;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private alive = false;
  private closing: Promise<void> | undefined;
  private spawnCount = 0;

  constructor(private readonly opts: LabOptions) {}

  async start(): Promise<void> {
    const o = this.opts;
    const t0 = Date.now();
    this.kernel = await findKernel({ version: o.kernelVersion });
    const initrd = await buildInitramfs({
      kernel: this.kernel,
      udev: o.udev,
      ninePCache: o.ninePCache,
      cacheDir: o.cacheDir,
    });
    this.workDir = await mkdtemp(path.join(o.tmpRoot ?? os.tmpdir(), 'vl-lab-'));
    live.add(this);
    installHooks();
    this.consoleLog = path.join(this.workDir, 'console.log');
    const qmpSock = path.join(this.workDir, 'qmp.sock');
    const qgaSock = path.join(this.workDir, 'qga.sock');

    // Forwards -----------------------------------------------------------------------------
    const netdev = ['user', 'id=n0', 'restrict=on'];
    const nbdGuestPort = checkPort(o.nbdGuestPort ?? 10809, 'nbdGuestPort');
    const hostFwds: HostForward[] = [
      { hostPort: o.nbdHostPort, guestPort: nbdGuestPort },
      ...(o.hostForwards ?? []),
    ];
    for (const f of hostFwds) {
      const hostPort = f.hostPort ? checkPort(f.hostPort, 'hostForward') : await freePort();
      const guestPort = checkPort(f.guestPort, 'hostForward guestPort');
      this.hostForwards.push({ hostPort, guestPort });
      netdev.push(`hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`);
    }
    this.guestNbdPort = this.hostForwards[0]!.hostPort;
    const guestFwds: GuestForward[] = [...(o.guestForwards ?? [])];
    if (o.temporal !== false) {
      const t = o.temporal ?? {};
      const guestAddr = t.guestAddr ?? DEFAULT_GUEST_TEMPORAL;
      const guestPort = t.guestPort ?? 7233;
      guestFwds.unshift({ guestAddr, guestPort, hostPort: t.hostPort ?? defaultTemporalHostPort() });
      this.guestTemporalAddress = `${guestAddr}:${guestPort}`;
    }
    if (guestFwds.length > 0 && !findInPath('socat')) {
      throw new Error('socat is needed for guest forwards (apt-get install socat)');
    }
    for (const f of guestFwds) {
      const guestAddr = f.guestAddr ?? DEFAULT_GUEST_TEMPORAL;
      const hostAddr = f.hostAddr ?? '127.0.0.1';
      if (!isSlirpGuestAddr(guestAddr))
        throw new Error(`guest forward address ${guestAddr} not in 10.0.2.0/24`);
      if (!isLoopbackV4(hostAddr)) throw new Error(`guest forward target ${hostAddr} is not loopback`);
      const gp = checkPort(f.guestPort, 'guestForward guestPort');
      const hp = checkPort(f.hostPort, 'guestForward hostPort');
      // QEMU runs the cmd: part itself (one socat per guest connection). Every piece is a
      // validated address or integer, so nothing from outside reaches that command line.
      netdev.push(`guestfwd=tcp:${guestAddr}:${gp}-cmd:socat - TCP:${hostAddr}:${hp}`);
    }

    const qemu = o.qemuBinary ?? 'qemu-system-x86_64';
    const args = [
      '-name',
      'volume-lifecycle-lab',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-accel',
      'tcg,thread=multi',
      '-cpu',
      'max',
      '-smp',
      String(o.cpus ?? 2),
      '-m',
      String(o.memoryMiB ?? 1024),
      '-kernel',
      this.kernel.vmlinuz,
      '-initrd',
      initrd.path,
      '-append',
      'console=ttyS0 panic=-1 net.ifnames=0 mitigations=off',
      '-serial',
      `file:${this.consoleLog}`,
      '-qmp',
      `unix:${qmpSock},server=on,wait=off`,
      '-chardev',
      `socket,id=qga0,path=${qgaSock},server=on,wait=off`,
      '-device',
      'virtio-serial-pci,id=vser0',
      '-device',
      'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
      '-virtfs',
      'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
      '-netdev',
      netdev.join(','),
      '-device',
      'virtio-net-pci,netdev=n0',
      ...(o.extraQemuArgs ?? []),
    ];
    // setpriv --pdeathsig: QEMU dies with us even if this process is SIGKILLed.
    const setpriv = findInPath('setpriv');
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', qemu, ...args]] : [qemu, args];
    const stderrLog = createWriteStream(path.join(this.workDir, 'qemu.stderr.log'));
    // A process group of its own: a Ctrl-C at the terminal reaches us, and we stop QEMU in order
    // (pdeathsig above still ends it with us).
    const child = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.child = child;
    child.stderr?.pipe(stderrLog);
    this.alive = true;
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        this.alive = false;
        resolve();
      });
      child.once('error', () => {
        this.alive = false;
        resolve();
      });
    });
    if (!child.pid) {
      await this.exited;
      throw new Error(`could not start ${qemu}`);
    }
    this.pid = child.pid;

    const isAlive = () => this.alive;
    this.qmp = await QmpClient.connect(qmpSock, { timeoutMs: 20_000, isAlive });
    await this.waitForConsole(o.bootTimeoutMs ?? 180_000);
    this.qga = await QgaClient.connect(qgaSock, { timeoutMs: 60_000, isAlive });
    this.runner = new QgaRunner(this.qga);
    this.bootMs = Date.now() - t0;
  }

  private async diagnostics(): Promise<string> {
    const con = await readFile(this.consoleLog, 'utf8').catch(() => '');
    const err = await readFile(path.join(this.workDir, 'qemu.stderr.log'), 'utf8').catch(() => '');
    return `\n--- console (tail) ---\n${con.split('\n').slice(-30).join('\n')}\n--- qemu stderr ---\n${err.slice(-2000)}`;
  }

  private async waitForConsole(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      const text = await readFile(this.consoleLog, 'utf8').catch(() => '');
      if (this.opts.onConsole && text.length > seen) {
        const chunk = text.slice(seen);
        const complete = chunk.lastIndexOf('\n') + 1;
        for (const l of chunk.slice(0, complete).split('\n').filter(Boolean)) this.opts.onConsole(l);
        seen += complete;
      }
      if (text.includes(`\n${READY_MARKER}`)) return;
      if (text.includes('LAB-FAILED') || text.includes('Kernel panic')) {
        throw new Error(`lab guest failed to boot${await this.diagnostics()}`);
      }
      if (!this.alive) throw new Error(`QEMU exited during boot${await this.diagnostics()}`);
      if (Date.now() > deadline)
        throw new Error(`lab guest not ready after ${timeoutMs} ms${await this.diagnostics()}`);
      await sleep(100);
    }
  }

  // --- commands ------------------------------------------------------------------------------

  exec(argv: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<CommandResult> {
    const [file, ...args] = argv;
    if (!file) throw new Error('exec: empty argv');
    return this.runner.run(file, args, opts);
  }

  async execOk(argv: readonly string[], opts?: { input?: string; timeoutMs?: number }): Promise<string> {
    const r = await this.exec(argv, opts);
    if (r.exitCode !== 0) {
      throw new Error(`guest: ${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim() || r.stdout.trim()}`);
    }
    return r.stdout;
  }

  async findGuestDisk(serial: string): Promise<string | undefined> {
    const names = (await this.execOk(['ls', '/sys/block'])).split(/\s+/).filter((n) => /^vd[a-z]+$/.test(n));
    if (names.length === 0) return undefined;
    // grep -H prints "<path>:<serial>"; -s: a disk that vanished meanwhile is not an error.
    const r = await this.exec(['grep', '-s', '-H', '', ...names.map((n) => `/sys/block/${n}/serial`)]);
    for (const line of r.stdout.split('\n')) {
      const m = /^\/sys\/block\/(vd[a-z]+)\/serial:(.*)$/.exec(line);
      if (m?.[1] && m[2]?.trim() === serial) return m[1];
    }
    return undefined;
  }

  async waitForGuestDisk(serial: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const name = await this.findGuestDisk(serial);
      if (name) return name;
      if (Date.now() > deadline) throw new Error(`no guest disk with serial ${serial} after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  async waitForGuestDiskGone(serial: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (await this.findGuestDisk(serial)) {
      if (Date.now() > deadline)
        throw new Error(`guest disk with serial ${serial} still present after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  // --- hot-plug ------------------------------------------------------------------------------

  private static nodeName(id: string): string {
    return `${id}-blk`;
  }

  async hotplug(req: HotplugRequest): Promise<void> {
    if (!/^[A-Za-z][A-Za-z0-9_.-]{0,26}$/.test(req.id)) throw new Error(`hotplug: bad device id ${req.id}`);
    if (!path.isAbsolute(req.file)) throw new Error(`hotplug: file must be absolute: ${req.file}`);
    if (Buffer.byteLength(req.serial) > 20)
      throw new Error(`hotplug: serial longer than 20 bytes: ${req.serial}`);
    const node = LabVm.nodeName(req.id);
    await this.qmp.execute('blockdev-add', {
      driver: 'raw',
      'node-name': node,
      'read-only': !!req.readOnly,
      file: { driver: 'file', filename: req.file, 'read-only': !!req.readOnly },
    });
    try {
      await this.qmp.execute('device_add', {
        driver: 'virtio-blk-pci',
        id: req.id,
        drive: node,
        serial: req.serial,
      });
    } catch (e) {
      await this.qmp.execute('blockdev-del', { 'node-name': node }).catch(() => {});
      throw e;
    }
  }

  /** device_del, wait for DEVICE_DELETED (the guest has let go), then blockdev-del. Idempotent. */
  async unplug(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const node = LabVm.nodeName(id);
    const deleted = this.qmp.expectEvent('DEVICE_DELETED', (d) => d.device === id, opts.timeoutMs ?? 30_000);
    try {
      await this.qmp.execute('device_del', { id });
      await deleted.promise;
    } catch (e) {
      deleted.cancel();
      if (!(e instanceof QmpError && e.errorClass === 'DeviceNotFound')) throw e;
    }
    try {
      await this.qmp.execute('blockdev-del', { 'node-name': node });
    } catch (e) {
      // Already gone is fine (idempotent); anything else (still in use) is not.
      if (!(e instanceof QmpError && /find|not found/i.test(e.desc))) throw e;
    }
  }

  // --- long-running guest processes ------------------------------------------------------------

  async spawnInGuest(
    argv: readonly string[],
    opts: { env?: Record<string, string>; logFile?: string; cwd?: string } = {},
  ): Promise<GuestProcess> {
    const [file] = argv;
    if (!file) throw new Error('spawnInGuest: empty argv');
    const n = ++this.spawnCount;
    const logFile = opts.logFile ?? `/tmp/lab-spawn-${n}-${path.basename(file)}.log`;
    const pid = await this.qga.exec({
      path: GUEST_SPAWN_HELPER,
      arg: [logFile, opts.cwd ?? '/', ...argv],
      env: guestEnv(opts.env),
    });
    let final: { exited: boolean; exitCode?: number } | undefined;
    const status = async () => {
      if (final) return final;
      const st = await this.qga.execStatus(pid);
      if (!st.exited) return { exited: false };
      final = { exited: true, exitCode: st.exitcode ?? (st.signal !== undefined ? 128 + st.signal : -1) };
      return final;
    };
    const readLog = async () => {
      const r = await this.exec(['cat', logFile]);
      return r.stdout;
    };
    return {
      pid,
      logFile,
      status,
      readLog,
      waitForLog: async (pattern, timeoutMs) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const text = await readLog();
          if (pattern.test(text)) return text;
          const st = await status();
          if (st.exited) {
            throw new Error(
              `guest process ${file} exited (${st.exitCode}) before ${pattern}:\n${text.slice(-3000)}`,
            );
          }
          if (Date.now() > deadline)
            throw new Error(`guest log ${logFile} did not match ${pattern}:\n${text.slice(-3000)}`);
          await sleep(250);
        }
      },
      kill: async (signal = 'TERM') => {
        if ((await status()).exited) return;
        await this.exec([GUEST_BUSYBOX, 'kill', `-${signal}`, String(pid)]);
      },
    };
  }

  // --- teardown ------------------------------------------------------------------------------

  /** Synchronous last-resort cleanup (process exit / signal). */
  killSync(): void {
    if (this.alive && this.pid) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (this.workDir && !this.opts.keepWorkDir) rmSync(this.workDir, { recursive: true, force: true });
    live.delete(this);
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.qga?.close();
    if (this.alive) {
      await this.qmp?.execute('quit', undefined, { timeoutMs: 2_000 }).catch(() => {});
      const gone = await Promise.race([this.exited.then(() => true), sleep(5_000).then(() => false)]);
      if (!gone && this.alive) {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
        await this.exited;
      }
    }
    this.qmp?.close();
    if (this.workDir && !this.opts.keepWorkDir) await rm(this.workDir, { recursive: true, force: true });
    live.delete(this);
    if (live.size === 0) uninstallHooks();
  }
}

/** Boot the appliance lab and wait until its guest agent answers. Always `close()` it. */
export async function startLab(opts: LabOptions = {}): Promise<Lab> {
  const lab = new LabVm(opts);
  try {
    await lab.start();
  } catch (e) {
    await lab.close();
    throw e;
  }
  return lab;
}
