// Benchmark: correlation latency in the appliance lab — from hot-plug to our resolution of the
// device, against fixed-interval pollers like the old daemon's, side by side in one run.
//
//   node --import tsx bench/correlation.ts [rounds=15]        (or BENCH_ROUNDS)
//
// Method. The lab guest (real kernel, udev) runs bench/correlation-guest.ts, which holds every
// waiter in one process: our SysfsCorrelator (product defaults) and plain pollers that scan
// /sys/block/vd*/serial every 1 s and every 2 s (free-running, so their phase to a hot-plug is
// arbitrary: on average they see a disk interval/2 after it appeared — the poller's best case),
// and a poller started when the disk is plugged (scan now, then every 1 s: an "attach, then poll"
// daemon). How often the old daemon polled is not written down anywhere we have, hence both
// 1 s and 2 s.
// Each round: the host sends `arm` (all waiters start looking for the new serial), waits a
// random 0–2 s (so the hot-plug falls at a random phase of the free-running pollers), hot-plugs a
// 64 MiB virtio disk with that serial through QmpHypervisor (blockdev-add + device_add over QMP,
// what the CloudStack simulator does in the lab) and takes t0 = the moment device_add returned.
// The guest stamps each resolution on its CLOCK_MONOTONIC; those stamps are mapped to the host's
// clock with the offset of the fastest of 8 ping/pong exchanges made just before (Cristian's
// method; error ≤ half that round trip, printed as "sync ±"). So latency = resolution (guest
// time, mapped) − t0 (host time), with no network delay in it. The guest also reports when the
// kernel logged the disk (virtio_blk's capacity line, mapped to the same clock through a
// /dev/kmsg marker) and when /dev/vdX appeared (an inotify watch on /dev in the agent, no
// polling): "ours − /dev/vdX" is our reaction time once the kernel has made the disk.
// Then the disk is unplugged (device_del, DEVICE_DELETED, blockdev-del) and gone in the guest
// before the next round. One warm-up round is not counted.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { diskSerialFor } from '../src/cloudstack/serial.js';
import { QmpHypervisor, startLab } from '../harness/lab/index.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const rounds = Number(process.argv[2] ?? process.env.BENCH_ROUNDS ?? 15);
const GUEST_PORT = 7901;
const APPLIANCE = randomUUID();
const WHO = ['ours', 'fixed1s', 'fixed2s', 'attach1s'] as const;
type Who = (typeof WHO)[number];

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '—');

/** Line-delimited JSON over the hostfwd to the guest agent. */
class Agent {
  private buf = '';
  private waiters: { match: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  private backlog: Msg[] = [];
  constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString();
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const m = { ...(JSON.parse(this.buf.slice(0, i)) as Msg), hostT: now() };
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.findIndex((x) => x.match(m));
        if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(m);
        else this.backlog.push(m);
      }
    });
  }
  static async connect(port: number, timeoutMs: number): Promise<Agent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await new Promise<net.Socket | undefined>((resolve) => {
        const c = net.createConnection(port, '127.0.0.1');
        c.once('connect', () => resolve(c));
        c.once('error', () => resolve(undefined));
      });
      if (s) {
        // slirp accepts before the guest listens; a ping proves the agent is there.
        const a = new Agent(s);
        s.on('error', () => undefined);
        const pong = await Promise.race([a.request({ op: 'ping' }, 'pong'), sleep(2000)]);
        if (pong) return a;
        s.destroy();
      }
      if (Date.now() > deadline) throw new Error(`guest agent not reachable after ${timeoutMs} ms`);
      await sleep(500);
    }
  }
  send(o: object) {
    this.sock.write(`${JSON.stringify(o)}\n`);
  }
  next(match: (m: Msg) => boolean, timeoutMs = 60_000): Promise<Msg> {
    const b = this.backlog.findIndex(match);
    if (b >= 0) return Promise.resolve(this.backlog.splice(b, 1)[0]!);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('guest agent: no answer')), timeoutMs);
      this.waiters.push({ match, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  }
  request(o: { op: string } & Record<string, unknown>, reply: string): Promise<Msg> {
    const p = this.next((m) => m.op === reply);
    this.send(o);
    return p;
  }
  close() {
    this.sock.destroy();
  }
}
interface Msg {
  op: string;
  t?: number;
  hostT: number;
  serial?: string;
  who?: Who;
  kernelName?: string;
  method?: string;
  error?: string;
  calErrMs?: number;
  devT?: number | null;
}

/** Guest clock − host clock, from the fastest of n ping/pongs. */
async function clockOffset(agent: Agent, n = 8): Promise<{ offset: number; err: number }> {
  let best = { offset: 0, err: Infinity };
  for (let i = 0; i < n; i++) {
    const h1 = now();
    const pong = await agent.request({ op: 'ping' }, 'pong');
    const h2 = pong.hostT;
    if ((h2 - h1) / 2 < best.err) best = { offset: pong.t! - (h1 + h2) / 2, err: (h2 - h1) / 2 };
  }
  return best;
}

interface Round {
  kernelName: string;
  method: string;
  kernel: number;
  devNode: number;
  lat: Record<Who, number>;
  sync: number;
}

const volumeDir = await mkdtemp(path.join(os.tmpdir(), 'vl-bench-corr-'));
const lab = await startLab({ temporal: false, hostForwards: [{ guestPort: GUEST_PORT }] });
const hostPort = lab.hostForwards.find((f) => f.guestPort === GUEST_PORT)!.hostPort;
let agentProc: Awaited<ReturnType<typeof lab.spawnInGuest>> | undefined;
let agent: Agent | undefined;
try {
  const qmp = new QmpHypervisor(lab, { dir: volumeDir, vmId: APPLIANCE });
  const spawnT = now();
  agentProc = await lab.spawnInGuest(['node', '--import', 'tsx', 'bench/correlation-guest.ts'], {
    cwd: ROOT,
    env: { PORT: String(GUEST_PORT) },
  });
  await agentProc.waitForLog(/correlation agent listening/, 240_000);
  agent = await Agent.connect(hostPort, 60_000);
  console.log(
    `# correlation latency in the appliance lab — ${new Date().toISOString()}, host ${os.cpus().length} CPUs, load avg ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(
        ' ',
      )}; guest kernel ${lab.kernel.version} under QEMU TCG, boot ${lab.bootMs} ms, agent up ${((now() - spawnT) / 1000).toFixed(1)} s after spawn`,
  );

  const results: Round[] = [];
  for (let r = 0; r <= rounds; r++) {
    const volumeId = randomUUID();
    const serial = diskSerialFor(volumeId);
    const sync = await clockOffset(agent);
    await agent.request({ op: 'arm', serial }, 'armed');
    const resolved = Promise.all(
      WHO.map((who) => agent!.next((m) => (m.op === 'resolved' || m.op === 'error') && m.who === who)),
    );
    await sleep(Math.random() * 2000);
    await qmp.attach({ volumeId, vmId: APPLIANCE, serial, deviceId: 1, sizeBytes: 64 * 2 ** 20 });
    const t0 = now();
    agent.send({ op: 'plugged', serial });
    const msgs = await resolved;
    const failed = msgs.find((m) => m.op === 'error');
    if (failed) throw new Error(`${failed.who}: ${failed.error}`);
    const kernelName = msgs[0]!.kernelName!;
    const k = await agent.request({ op: 'kmsg', kernelName }, 'kmsg');
    const toHost = (guestT: number | null | undefined) =>
      typeof guestT === 'number' ? guestT - sync.offset - t0 : NaN;
    const lat = Object.fromEntries(msgs.map((m) => [m.who!, toHost(m.t)])) as Record<Who, number>;
    await qmp.detach({ volumeId, vmId: APPLIANCE });
    await lab.waitForGuestDiskGone(serial, 30_000);
    if (r === 0) continue; // warm-up
    results.push({
      kernelName,
      method: msgs[0]!.method!,
      kernel: toHost(k.t),
      devNode: toHost(k.devT),
      lat,
      sync: sync.err,
    });
    console.log(
      `  round ${String(r).padStart(2)}: ${kernelName} kernel ${f0(toHost(k.t))} ms, /dev node ${f0(toHost(k.devT))} ms, ours ${f0(lat.ours)} ms (${msgs[0]!.method}), fixed 1 s ${f0(lat.fixed1s)}, fixed 2 s ${f0(lat.fixed2s)}, attach+1 s ${f0(lat.attach1s)}  (sync ±${sync.err.toFixed(1)} ms)`,
    );
  }

  const col = (f: (x: Round) => number) => results.map(f);
  const rowsOut: [string, number[]][] = [
    ['hot-plug → kernel logs the disk', col((x) => x.kernel)],
    ['hot-plug → /dev/vdX exists (inotify)', col((x) => x.devNode)],
    ['ours (SysfsCorrelator, product defaults)', col((x) => x.lat.ours)],
    ['fixed 1 s poller (free-running)', col((x) => x.lat.fixed1s)],
    ['fixed 2 s poller (free-running)', col((x) => x.lat.fixed2s)],
    ['1 s poller started at the attach', col((x) => x.lat.attach1s)],
    ['ours − kernel log line', col((x) => x.lat.ours - x.kernel)],
    ['ours − /dev/vdX appeared (our reaction time)', col((x) => x.lat.ours - x.devNode)],
  ];
  console.log(
    `\nhot-plug (device_add returned) → device resolved in the guest, ${results.length} attaches (ms):\n`,
  );
  console.log('| waiter | median | p90 | min | max | mean |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [name, xs] of rowsOut) {
    const ok = xs.filter((x) => Number.isFinite(x));
    const mean = ok.reduce((a, b) => a + b, 0) / ok.length;
    console.log(
      `| ${name} | ${f0(median(xs))} | ${f0(pct(xs, 90))} | ${f0(Math.min(...ok))} | ${f0(Math.max(...ok))} | ${f0(mean)} |`,
    );
  }
  const m = median(col((x) => x.lat.ours));
  console.log(
    `\nmedian ratio: fixed 1 s / ours ${(median(col((x) => x.lat.fixed1s)) / m).toFixed(1)}×, fixed 2 s / ours ${(median(col((x) => x.lat.fixed2s)) / m).toFixed(1)}×, attach+1 s / ours ${(median(col((x) => x.lat.attach1s)) / m).toFixed(1)}×`,
  );
  console.log(
    `clock sync error (half the fastest ping round trip): median ±${median(col((x) => x.sync)).toFixed(1)} ms; resolved by: ${[...new Set(results.map((x) => x.method))].join(', ')}`,
  );
} finally {
  agent?.close();
  await agentProc?.kill('TERM').catch(() => undefined);
  await lab.close();
  await rm(volumeDir, { recursive: true, force: true });
}
