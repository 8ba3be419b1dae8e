// Guest half of bench/correlation.ts: runs INSIDE the appliance-lab guest (where the disks
// appear), started by the host script with `node --import tsx bench/correlation-guest.ts`.
//
// It listens on TCP (PORT, reached from the host through a lab hostfwd) for JSON lines:
//   {op:'ping'}                 → {op:'pong', t}            t: this guest's CLOCK_MONOTONIC, ms
//   {op:'arm', serial}          → {op:'armed'}; then, as each waiter finds the disk:
//                                 {op:'resolved', serial, who, t, kernelName, method}
//   {op:'plugged', serial}      start the "poll from the attach" waiter (the host has just
//                               hot-plugged the disk)
//   {op:'kmsg', kernelName}     → {op:'kmsg', t, calErrMs, devT}: when the kernel logged the
//                                 disk (virtio_blk's "[vdX] N 512-byte logical blocks" line,
//                                 mapped to the same clock as the resolutions), and when
//                                 /dev/vdX appeared (an inotify watch on /dev, no polling)
// Waiters for one serial, all started before the hot-plug and all in this process:
//   ours       SysfsCorrelator.waitForDevice with the product's defaults (fs watch on /dev and
//              /dev/disk/by-id, 50 ms safety poll of /sys/block)
//   fixed1s    a free-running loop "scan /sys/block/vd*/serial, sleep 1 s", started when this
//              process starts, so its phase relative to a hot-plug is arbitrary
//   fixed2s    the same with 2 s
//   attach1s   a loop started when the host says the disk was plugged: scan at once, then every 1 s
//              (an "attach, then poll" daemon)
import { execFile } from 'node:child_process';
import { existsSync, watch } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import { SysfsCorrelator } from '../src/device/correlation.js';

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const port = Number(process.env.PORT ?? 7901);
const correlator = new SysfsCorrelator();

/** What a plain poller does: read every virtio disk's serial. */
async function scan(): Promise<Map<string, string>> {
  const bySerial = new Map<string, string>();
  for (const k of await readdir('/sys/block').catch(() => [] as string[])) {
    if (!/^vd[a-z]+$/.test(k)) continue;
    const s = (await readFile(`/sys/block/${k}/serial`, 'utf8').catch(() => '')).trim();
    if (s) bySerial.set(s, k);
  }
  return bySerial;
}

// When devtmpfs made each /dev/vdX node (inotify, no polling): a reference for our reaction time.
const devNodeAt = new Map<string, number>();
watch('/dev', (_event, name) => {
  // The first event after the arm (udev's later chmod/chown of the node also raises events).
  if (
    typeof name === 'string' &&
    /^vd[a-z]+$/.test(name) &&
    !devNodeAt.has(name) &&
    existsSync(`/dev/${name}`)
  )
    devNodeAt.set(name, now());
});

type Found = (who: string, kernelName: string, method: string) => void;
const wanted = new Map<string, Found>();

function freeRunningPoller(who: string, intervalMs: number): void {
  void (async () => {
    for (;;) {
      if (wanted.size > 0) {
        const seen = await scan();
        for (const [serial, found] of wanted) {
          const k = seen.get(serial);
          if (k) found(who, k, 'sysfs-scan');
        }
      }
      await sleep(intervalMs);
    }
  })();
}
freeRunningPoller('fixed1s', 1000);
freeRunningPoller('fixed2s', 2000);

async function pollFromAttach(serial: string, found: Found): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const k = (await scan()).get(serial);
    if (k) return found('attach1s', k, 'sysfs-scan');
    await sleep(1000);
  }
}

/** Kernel log time of the disk's capacity line, mapped onto `now()` with a /dev/kmsg marker. */
async function kernelAppearance(kernelName: string): Promise<{ t: number | null; calErrMs: number }> {
  const marker = `vl-bench-cal-${Math.random().toString(36).slice(2)}`;
  const before = now();
  await writeFile('/dev/kmsg', `${marker}\n`);
  const after = now();
  const { stdout } = await promisify(execFile)('dmesg', [], { maxBuffer: 64 * 2 ** 20 });
  const stamp = (line: string) => Number(/^\[\s*(\d+\.\d+)\]/.exec(line)?.[1]) * 1000;
  const lines = stdout.split('\n');
  const mark = lines.find((l) => l.includes(marker));
  const disk = lines.filter((l) => l.includes(`[${kernelName}] `) && /logical blocks/.test(l)).pop();
  if (!mark || !disk) return { t: null, calErrMs: NaN };
  const offset = stamp(mark) - (before + after) / 2;
  return { t: stamp(disk) - offset, calErrMs: (after - before) / 2 };
}

const server = net.createServer((sock) => {
  const send = (o: object) => sock.write(`${JSON.stringify(o)}\n`);
  let buf = '';
  sock.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const m = JSON.parse(line) as { op: string; serial?: string; kernelName?: string };
      if (m.op === 'ping') send({ op: 'pong', t: now() });
      else if (m.op === 'arm') {
        const serial = m.serial!;
        devNodeAt.clear();
        const done = new Set<string>();
        const found: Found = (who, kernelName, method) => {
          const t = now();
          if (done.has(who)) return;
          done.add(who);
          send({ op: 'resolved', serial, who, t, kernelName, method });
          if (['fixed1s', 'fixed2s'].every((w) => done.has(w))) wanted.delete(serial);
        };
        wanted.set(serial, found);
        correlator
          .waitForDevice({ serial, timeoutMs: 60_000 })
          .then((d) => found('ours', d.kernelName, d.method))
          .catch((e: unknown) => send({ op: 'error', serial, who: 'ours', error: String(e) }));
        send({ op: 'armed', serial });
      } else if (m.op === 'plugged') {
        const f = wanted.get(m.serial!);
        if (f) void pollFromAttach(m.serial!, f);
      } else if (m.op === 'kmsg') {
        void kernelAppearance(m.kernelName!).then((r) =>
          send({ op: 'kmsg', ...r, devT: devNodeAt.get(m.kernelName!) ?? null }),
        );
      }
    }
  });
  sock.on('error', () => sock.destroy());
});
server.listen(port, '0.0.0.0', () => console.log(`correlation agent listening on ${port}`));
