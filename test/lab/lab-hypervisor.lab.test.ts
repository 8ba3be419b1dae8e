/**
 * Appliance lab: hypervisor backends for the CloudStack simulator (QMP hot-plug for the
 * appliance, plain files for target VMs), long-running guest processes, and the two network
 * paths (guest → host loopback via guestfwd, host → guest via hostfwd). Slow (TCG).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { diskSerialFor } from '../../src/cloudstack/serial.js';
import { startLab, type Lab } from '../../harness/lab/index.js';
import { FileTargetHypervisor, QmpHypervisor, RoutingHypervisor } from '../../harness/lab/qmp-hypervisor.js';

const APPLIANCE = '11111111-2222-4333-8444-555555555555';
const TARGET = '99999999-8888-4777-8666-555555555555';
const VOLUME = '8a4f3a2e-1c2b-4d5e-9f60-0123456789ab';
const MiB = 1024 * 1024;

describe('appliance lab: hypervisor backends, guest processes, network', { timeout: 600_000 }, () => {
  let lab: Lab;
  let dir: string;
  let server: net.Server;
  let serverPort: number;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vl-lab-hv-'));
    // A loopback service standing in for Temporal: answers every connection with a greeting.
    server = net.createServer((s) => s.end('hello from host loopback\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    serverPort = (server.address() as net.AddressInfo).port;
    lab = await startLab({ temporal: { hostPort: serverPort } });
    console.log(`lab: boot-to-ready ${lab.bootMs} ms`);
  });

  after(async () => {
    await lab?.close();
    await new Promise((r) => server?.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('moves a volume between the appliance (QMP) and a target VM (file) with data intact', async () => {
    const appliance = new QmpHypervisor(lab, { dir, vmId: APPLIANCE });
    const targets = new FileTargetHypervisor({ dir });
    const hv = new RoutingHypervisor({ [APPLIANCE]: appliance }, targets);
    const serial = diskSerialFor(VOLUME);

    // 1. Attach to the appliance: sparse image created with the volume's size, disk visible by serial.
    await hv.attach({ volumeId: VOLUME, vmId: APPLIANCE, serial, deviceId: 1, sizeBytes: 32 * MiB });
    await hv.attach({ volumeId: VOLUME, vmId: APPLIANCE, serial, deviceId: 1, sizeBytes: 32 * MiB }); // idempotent
    const file = appliance.imagePath(VOLUME);
    const st = await stat(file);
    assert.equal(st.size, 32 * MiB);
    assert.ok(st.blocks * 512 < 32 * MiB, 'image is sparse');
    const name = await lab.waitForGuestDisk(serial, 30_000);
    assert.equal(
      (await lab.execOk(['readlink', '-f', `/dev/disk/by-id/virtio-${serial}`])).trim(),
      `/dev/${name}`,
      'udev made the by-id link',
    );
    await lab.execOk(['dd', `of=/dev/${name}`, 'bs=512', 'count=1', 'conv=fsync'], {
      input: 'written-by-appliance'.padEnd(512, '.'),
    });

    // 2. Detach from the appliance, attach to a target VM which changes the data.
    await hv.detach({ volumeId: VOLUME, vmId: APPLIANCE });
    await lab.waitForGuestDiskGone(serial, 30_000);
    assert.deepEqual(appliance.attachments(), []);
    await hv.attach({ volumeId: VOLUME, vmId: TARGET, serial, deviceId: 1, sizeBytes: 32 * MiB });
    assert.equal(targets.attachmentOf(VOLUME)?.vmId, TARGET);
    assert.equal((await readFile(file)).subarray(0, 20).toString(), 'written-by-appliance');
    const fh = await open(file, 'r+');
    await fh.write(Buffer.from('changed-by-target-vm'), 0, 20, 0);
    await fh.close();
    await hv.detach({ volumeId: VOLUME, vmId: TARGET });
    assert.equal(targets.attachmentOf(VOLUME), undefined);

    // 3. Back on the appliance, the guest reads what the target VM wrote.
    await hv.attach({ volumeId: VOLUME, vmId: APPLIANCE, serial, deviceId: 1, sizeBytes: 32 * MiB });
    const again = await lab.waitForGuestDisk(serial, 30_000);
    const head = await lab.execOk(['dd', `if=/dev/${again}`, 'bs=512', 'count=1', 'iflag=direct']);
    assert.equal(head.slice(0, 20), 'changed-by-target-vm');
    await hv.detach({ volumeId: VOLUME, vmId: APPLIANCE });
    await hv.detach({ volumeId: VOLUME, vmId: APPLIANCE }); // idempotent
    await lab.waitForGuestDiskGone(serial, 30_000);
  });

  it('runs a long-running guest process with visible output and env', async () => {
    const p = await lab.spawnInGuest(
      [
        'node',
        '-e',
        'console.log("worker up", process.env.LAB_TEST, process.cwd()); setInterval(() => {}, 1000)',
      ],
      { env: { LAB_TEST: 'env-ok' }, cwd: '/tmp' },
    );
    const log = await p.waitForLog(/worker up/, 60_000);
    assert.match(log, /worker up env-ok \/tmp/);
    assert.deepEqual(await p.status(), { exited: false });
    await p.kill('TERM');
    const deadline = Date.now() + 30_000;
    let st = await p.status();
    while (!st.exited && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      st = await p.status();
    }
    assert.equal(st.exited, true);
  });

  it('reaches host loopback from the guest (guestfwd) and the guest from the host (hostfwd)', async () => {
    assert.equal(lab.guestTemporalAddress, '10.0.2.100:7233');
    const out = await lab.execOk(['socat', '-T', '10', '-', 'TCP:10.0.2.100:7233'], { timeoutMs: 30_000 });
    assert.equal(out, 'hello from host loopback\n');

    const listener = await lab.spawnInGuest([
      'socat',
      '-u',
      'OPEN:/proc/sys/kernel/hostname',
      'TCP-LISTEN:10809,reuseaddr',
    ]);
    // Poll until the guest listens, then read what it sends through the host-side forward.
    const deadline = Date.now() + 30_000;
    let got = '';
    while (Date.now() < deadline) {
      got = await new Promise<string>((resolve) => {
        const s = net.createConnection(lab.guestNbdPort, '127.0.0.1');
        let data = '';
        s.on('data', (d: Buffer) => (data += d.toString()));
        s.on('close', () => resolve(data));
        s.on('error', () => resolve(''));
      });
      if (got) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(got.trim(), 'lab-appliance');
    await listener.kill('KILL');
  });
});
