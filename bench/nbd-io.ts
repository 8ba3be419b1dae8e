// Benchmark: I/O through the stable name — NBD read and write throughput of an export over
// /dev/mapper/<name> versus one over the raw /dev/vdX, same run, in the appliance lab.
//
//   node --import tsx bench/nbd-io.ts [reps=5] [sizeMiB=256]        (or BENCH_REPS / BENCH_SIZE_MIB)
//
// Method. The lab guest gets one hot-plugged virtio disk (QmpHypervisor: a raw sparse image on
// this machine). In the guest, the product's own code sets it up through the guest agent: a dm
// linear device over it (DeviceMapper.ensureLinear, as the attach saga's dm step), the nbdkit
// server (NbdkitSupervisor: `nbdkit file dir=…`) and two exports in its directory
// (NbdkitDirBackend.ensure): `migration-vol-<name>` → /dev/mapper/<name>, as the product serves
// it, and `migration-vol-raw-vdX` → /dev/vdX, the same disk without dm. One server, one disk:
// the only difference between the two is the dm layer.
// From this machine, a real NBD client (nbdcopy, libnbd) moves the whole disk through the lab's
// hostfwd to the guest's nbdkit: write = a file of random bytes → export (`--flush`, so the data
// reached the virtual disk), read = export → null: (`--no-extents`, every byte read). Before
// each read the guest drops its page cache, so reads come from the virtual disk, not the guest's
// cache. Each repetition writes dm and raw, then reads dm and raw, the order flipped every
// repetition (ABBA) so drift in machine load hits both alike; the figures are medians of the wall
// time of each nbdcopy run (connect included). QEMU runs under TCG here, so the absolute MiB/s
// are low and move with the load of this machine; the dm/raw ratio, measured side by side, is
// the figure to quote — printed as the ratio of the medians and as the median of the
// per-repetition ratios (dm and raw of one repetition ran back to back, so that one cancels
// most of the load drift). For scale, the same comparison is then made in the guest without NBD (dd,
// O_DIRECT, 1 MiB blocks), and at the end both exports are read back into files and compared
// with what was written.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { DeviceMapper } from '../src/device/devicemapper.js';
import { QmpHypervisor, startLab, type Lab } from '../harness/lab/index.js';
import type { EntryKind, ExportFs } from '../src/nbd/fs.js';
import { NbdkitDirBackend, NbdkitSupervisor } from '../src/nbd/nbdkit-dir.js';

const reps = Number(process.argv[2] ?? process.env.BENCH_REPS ?? 5);
const sizeMiB = Number(process.argv[3] ?? process.env.BENCH_SIZE_MIB ?? 256);
const NAME = 'benchvmdisk0';
const GUEST_DIR = '/run/vl-bench';
const APPLIANCE = randomUUID();

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The export backend's few file operations, run in the guest (where nbdkit runs). */
class GuestFs implements ExportFs {
  constructor(private readonly lab: Lab) {}
  async mkdirp(dir: string) {
    await this.lab.execOk(['mkdir', '-p', dir]);
  }
  async list(dir: string) {
    const r = await this.lab.exec(['find', dir, '-mindepth', '1', '-maxdepth', '1', '-printf', '%y %f\\n']);
    if (r.exitCode !== 0) return [];
    const kinds: Record<string, EntryKind> = { l: 'symlink', f: 'file', d: 'dir' };
    return r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => ({ name: l.slice(2), kind: kinds[l[0]!] ?? 'other' }));
  }
  async kindOf(p: string): Promise<EntryKind | undefined> {
    const r = await this.lab.exec(['stat', '-c', '%F', p]);
    if (r.exitCode !== 0) return undefined;
    const t = r.stdout.trim();
    if (t === 'symbolic link') return 'symlink';
    if (t.startsWith('regular')) return 'file';
    return t === 'directory' ? 'dir' : 'other';
  }
  async readlink(p: string) {
    const kind = await this.kindOf(p);
    if (kind === undefined) return undefined;
    if (kind !== 'symlink') throw new Error(`${p} is not a symlink`);
    return (await this.lab.execOk(['readlink', p])).trim();
  }
  async replaceSymlink(target: string, linkPath: string, stagingDir: string) {
    const tmp = path.posix.join(stagingDir, `.${path.posix.basename(linkPath)}.tmp-${randomUUID()}`);
    await this.lab.execOk(['mkdir', '-p', stagingDir]);
    await this.lab.execOk(['ln', '-s', target, tmp]);
    await this.lab.execOk(['mv', '-T', tmp, linkPath]);
  }
  async readText(p: string) {
    const r = await this.lab.exec(['cat', p]);
    return r.exitCode === 0 ? r.stdout : undefined;
  }
  async replaceText(p: string, data: string, stagingDir: string) {
    const tmp = path.posix.join(stagingDir, `.${path.posix.basename(p)}.tmp-${randomUUID()}`);
    await this.lab.execOk(['mkdir', '-p', stagingDir]);
    await this.lab.execOk(['dd', `of=${tmp}`, 'conv=fsync', 'status=none'], { input: data });
    await this.lab.execOk(['mv', '-T', tmp, p]);
  }
  async remove(p: string) {
    return (await this.lab.exec(['rm', p])).exitCode === 0;
  }
}

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const hostDir = await mkdtemp(path.join(os.tmpdir(), 'vl-bench-nbd-'));
const lab = await startLab({ temporal: false });
try {
  const qmp = new QmpHypervisor(lab, { dir: path.join(hostDir, 'volumes'), vmId: APPLIANCE });
  const volumeId = randomUUID();
  const serial = diskSerialFor(volumeId);
  await qmp.attach({ volumeId, vmId: APPLIANCE, serial, deviceId: 1, sizeBytes: sizeMiB * 2 ** 20 });
  const vd = await lab.waitForGuestDisk(serial, 60_000);

  const dm = new DeviceMapper({ runner: lab.runner });
  await dm.ensureLinear(NAME, `/dev/${vd}`);
  const guestFs = new GuestFs(lab);
  const exportsDir = `${GUEST_DIR}/exports`;
  const supervisor = new NbdkitSupervisor({
    exportsDir,
    host: '0.0.0.0',
    port: 10809,
    pidFile: `${GUEST_DIR}/nbdkit.pid`,
    runner: lab.runner,
    fs: guestFs,
    readyTimeoutMs: 60_000,
  });
  await supervisor.start();
  const backend = new NbdkitDirBackend({
    exportsDir,
    host: '127.0.0.1',
    port: 10809,
    runner: lab.runner,
    fs: guestFs,
  });
  const paths = {
    dm: { exportName: `migration-vol-${NAME}`, targetPath: `/dev/mapper/${NAME}` },
    raw: { exportName: `migration-vol-raw-${vd}`, targetPath: `/dev/${vd}` },
  };
  for (const spec of Object.values(paths)) await backend.ensure(spec);
  const uri = (which: keyof typeof paths) => `nbd://127.0.0.1:${lab.guestNbdPort}/${paths[which].exportName}`;
  const listed = (await execa('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${lab.guestNbdPort}`])).stdout;
  for (const which of ['dm', 'raw'] as const) {
    if (!listed.includes(paths[which].exportName))
      throw new Error(`${paths[which].exportName} is not served: ${listed}`);
  }
  const table = (await lab.execOk(['dmsetup', 'table', NAME])).trim();

  // The data to write: random, so nothing in the path can shortcut zeroes.
  const src = path.join(hostDir, 'source.img');
  const chunk = 16 * 2 ** 20;
  const parts: Buffer[] = [];
  for (let off = 0; off < sizeMiB * 2 ** 20; off += chunk) parts.push(randomBytes(chunk));
  await writeFile(src, Buffer.concat(parts));
  parts.length = 0;

  console.log(
    `# NBD I/O through the stable name — ${new Date().toISOString()}, host ${os.cpus().length} CPUs, load avg ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(
        ' ',
      )}; guest kernel ${lab.kernel.version} under QEMU TCG; nbdkit file dir= in the guest, nbdcopy on the host through the lab's hostfwd`,
  );
  console.log(`# disk ${sizeMiB} MiB = /dev/${vd}; dm ${NAME}: ${table}\n`);

  const dropCaches = () => lab.execOk(['sh', '-c', 'sync && echo 3 > /proc/sys/vm/drop_caches']);
  const timed = async (argv: string[]) => {
    const t = performance.now();
    await execa('nbdcopy', argv);
    return (performance.now() - t) / 1000;
  };
  const write = (which: keyof typeof paths) => timed(['--flush', '--sparse=0', src, uri(which)]);
  const read = async (which: keyof typeof paths) => {
    await dropCaches();
    return timed(['--no-extents', uri(which), 'null:']);
  };
  const secs = {
    write: { dm: [] as number[], raw: [] as number[] },
    read: { dm: [] as number[], raw: [] as number[] },
  };
  // One warm-up pass each way, not counted (first touch of the image on this machine, nbdkit).
  await write('dm');
  await read('raw');
  for (let r = 0; r < reps; r++) {
    const order = r % 2 === 0 ? (['dm', 'raw'] as const) : (['raw', 'dm'] as const);
    for (const which of order) secs.write[which].push(await write(which));
    for (const which of order) secs.read[which].push(await read(which));
    const mibs = (s: number) => (sizeMiB / s).toFixed(1);
    console.log(
      `  rep ${r + 1} (${order.join(' then ')}): write dm ${mibs(secs.write.dm[r]!)} / raw ${mibs(secs.write.raw[r]!)} MiB/s, read dm ${mibs(secs.read.dm[r]!)} / raw ${mibs(secs.read.raw[r]!)} MiB/s`,
    );
  }

  // The same disk without NBD, in the guest (dd with O_DIRECT): how much of the spread above is
  // the dm layer and how much the NBD path (nbdkit, slirp, the client) and this machine's load.
  const local = {
    write: { dm: [] as number[], raw: [] as number[] },
    read: { dm: [] as number[], raw: [] as number[] },
  };
  const dd = async (args: string[]) => {
    const r = await lab.execOk(['sh', '-c', `dd ${args.join(' ')} 2>&1 >/dev/null`], { timeoutMs: 600_000 });
    const m = /([\d.]+) s,/.exec(r);
    if (!m) throw new Error(`dd: ${r}`);
    return Number(m[1]);
  };
  const dev = (which: keyof typeof paths) => paths[which].targetPath;
  for (let r = 0; r < reps; r++) {
    const order = r % 2 === 0 ? (['dm', 'raw'] as const) : (['raw', 'dm'] as const);
    for (const which of order)
      local.write[which].push(
        await dd([
          'if=/dev/zero',
          `of=${dev(which)}`,
          'bs=1M',
          `count=${sizeMiB}`,
          'oflag=direct',
          'conv=fsync',
        ]),
      );
    for (const which of order)
      local.read[which].push(
        await dd([`if=${dev(which)}`, 'of=/dev/null', 'bs=1M', `count=${sizeMiB}`, 'iflag=direct']),
      );
  }
  // dd wrote zeroes over the disk: write the data back for the comparison below.
  await write('dm');

  // Read both back and compare with what was written.
  const want = await sha256(src);
  const integrity: string[] = [];
  for (const which of ['dm', 'raw'] as const) {
    const out = path.join(hostDir, `${which}.out`);
    await dropCaches();
    await execa('nbdcopy', [uri(which), out]);
    integrity.push(`${which} ${(await sha256(out)) === want ? 'identical' : 'DIFFERENT'}`);
    await rm(out);
  }

  const ratios = (t: typeof secs, op: 'write' | 'read') => t[op].raw.map((s, i) => s / t[op].dm[i]!);
  /** Ratio of the medians, and the median of the per-repetition ratios (dm and raw side by side). */
  const printTable = (title: string, t: typeof secs) => {
    console.log(`\n${title}:\n`);
    console.log(
      '| | dm (/dev/mapper) | raw (/dev/vdX) | dm / raw (of medians) | dm / raw (median of paired reps) |',
    );
    console.log('|---|---:|---:|---:|---:|');
    for (const op of ['write', 'read'] as const) {
      const dmRate = sizeMiB / median(t[op].dm);
      const rawRate = sizeMiB / median(t[op].raw);
      console.log(
        `| ${op} | ${dmRate.toFixed(1)} | ${rawRate.toFixed(1)} | ${(dmRate / rawRate).toFixed(3)} | ${median(ratios(t, op)).toFixed(3)} |`,
      );
    }
  };
  printTable(`NBD from this machine, median of ${reps} (${sizeMiB} MiB each), MiB/s`, secs);

  const showRatios = (t: typeof secs) =>
    (['write', 'read'] as const)
      .map(
        (op) =>
          `${op} ${ratios(t, op)
            .map((x) => x.toFixed(2))
            .join(' ')} (median ${median(ratios(t, op)).toFixed(3)})`,
      )
      .join('; ');
  console.log(`\nper-repetition dm/raw (same repetition, side by side): ${showRatios(secs)}`);

  printTable(`the same disk in the guest without NBD (dd bs=1M O_DIRECT), median of ${reps}, MiB/s`, local);
  console.log(`\nper-repetition dm/raw without NBD: ${showRatios(local)}`);
  console.log(`read back after the run: ${integrity.join(', ')} to the data written`);

  for (const spec of Object.values(paths)) await backend.remove(spec.exportName);
  await supervisor.stop();
  await dm.remove(NAME);
  await qmp.detach({ volumeId, vmId: APPLIANCE });
} finally {
  await lab.close();
  await rm(hostDir, { recursive: true, force: true });
}
