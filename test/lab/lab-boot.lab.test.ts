/**
 * Appliance lab smoke test: boots the QEMU guest, runs commands in it through qemu-ga, hot-plugs
 * a virtio disk over QMP and checks the data path both ways. Slow (TCG): ~10-30 s.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, truncate } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startLab, type Lab } from '../../harness/lab/index.js';

const SERIAL = '8a4f3a2e1c2b4d5e9f60';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('appliance lab', { timeout: 600_000 }, () => {
  let lab: Lab;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vl-lab-test-'));
    lab = await startLab({ temporal: false });
    console.log(`lab: boot-to-ready ${lab.bootMs} ms (kernel ${lab.kernel.version})`);
  });

  after(async () => {
    await lab?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs the chosen kernel with device-mapper', async () => {
    assert.equal((await lab.execOk(['uname', '-r'])).trim(), lab.kernel.version);
    const v = await lab.execOk(['dmsetup', 'version']);
    assert.match(v, /Driver version:\s+\d+\.\d+\.\d+/);
  });

  it('passes stdin and exit codes through', async () => {
    const r = await lab.exec(['cat'], { input: 'hello\n' });
    assert.deepEqual(r, { stdout: 'hello\n', stderr: '', exitCode: 0 });
    const f = await lab.exec(['sh', '-c', 'echo oops >&2; exit 3']);
    assert.equal(f.exitCode, 3);
    assert.equal(f.stderr, 'oops\n');
    await assert.rejects(lab.exec(['/nonexistent/binary']), /could not run/);
  });

  it('hot-plugs a disk the guest sees by serial, with data visible on both sides', async () => {
    const file = path.join(dir, 'vol1.img');
    await (await open(file, 'w')).close();
    await truncate(file, 64 * 1024 * 1024);

    const t0 = Date.now();
    await lab.hotplug({ id: 'vol1', file, serial: SERIAL });
    const name = await lab.waitForGuestDisk(SERIAL, 30_000);
    console.log(`lab: hot-plug-to-visible ${Date.now() - t0} ms (${name})`);
    assert.equal((await lab.execOk(['cat', `/sys/block/${name}/serial`])).trim(), SERIAL);
    assert.equal(
      (await lab.execOk(['blockdev', '--getsize64', `/dev/${name}`])).trim(),
      String(64 * 1024 * 1024),
    );

    // Guest writes 1 MiB of a pattern at offset 4 MiB; the host reads it from the image file.
    // (Printable bytes: the runner's stdin is a string.)
    const pattern = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < pattern.length; i++) pattern[i] = 33 + ((i * 7 + 13) % 94);
    await lab.execOk(
      ['dd', `of=/dev/${name}`, 'bs=1M', 'seek=4', 'count=1', 'iflag=fullblock', 'conv=fsync'],
      {
        input: pattern.toString('latin1'),
      },
    );
    const onHost = (await readFile(file)).subarray(4 * 1024 * 1024, 5 * 1024 * 1024);
    assert.ok(onHost.equals(pattern), 'pattern written in the guest is in the host file');

    await lab.unplug('vol1');
    await lab.waitForGuestDiskGone(SERIAL, 30_000);
    assert.equal(await lab.findGuestDisk(SERIAL), undefined);
    assert.notEqual((await lab.exec(['test', '-e', `/dev/${name}`])).exitCode, 0, `/dev/${name} is gone`);
  });

  it('closes without leaving QEMU or the temp dir behind', async () => {
    const { pid, workDir } = lab;
    assert.ok(pidAlive(pid));
    await lab.close();
    await lab.close(); // idempotent
    assert.equal(pidAlive(pid), false, 'qemu process is gone');
    assert.equal(existsSync(workDir), false, 'temp dir removed');
  });
});
