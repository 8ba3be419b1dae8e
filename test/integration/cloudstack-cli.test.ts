// Conformance with a real third-party client: Debian's `cloudstack` CLI (package `cs`,
// python3-cs 2.7.1), which signs with signatureversion=3 + expires (…+0000) and camel-case
// signatureVersion, GET unless --post. If our simulator's signing,
// envelopes or job handling drifted from CloudStack's, this client would reject them.
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { startSimulator, type RunningSimulator } from '../../harness/cloudstack-sim/index.js';

async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const cli = await findOnPath('cloudstack');
const skip = cli
  ? false
  : 'the `cloudstack` CLI is not installed (Debian package `cs`: apt-get install -y cs)';

describe('Debian cloudstack CLI against the simulator', { skip }, () => {
  let env: RunningSimulator;
  let home: string;
  before(async () => {
    env = await startSimulator({ jobDurationMs: 0 });
    home = await mkdtemp(path.join(os.tmpdir(), 'cs-cli-'));
  });
  after(async () => {
    await env?.close();
    if (home) await rm(home, { recursive: true, force: true });
  });

  const run = (args: string[]) =>
    execa(cli!, args, {
      reject: false,
      env: {
        // An empty HOME: no ~/.cloudstack.ini can override the endpoint.
        HOME: home,
        CLOUDSTACK_ENDPOINT: env.url,
        CLOUDSTACK_KEY: env.apiKey,
        CLOUDSTACK_SECRET: env.secretKey,
      },
      extendEnv: true,
      timeout: 60_000,
    });
  const json = (s: string) => JSON.parse(s) as Record<string, unknown>;

  test('listVolumes with a space and * in a value (signature accepted, list envelope read)', async () => {
    const v = env.state.addVolume({ name: 'data disk*1', size: 2 ** 30, zoneid: env.zone.id });
    const r = await run(['listVolumes', 'name=data disk*1']);
    assert.equal(r.exitCode, 0, r.stderr);
    const out = json(r.stdout);
    assert.equal(out.count, 1);
    assert.equal((out.volume as { id: string }[])[0]!.id, v.id);
    assert.ok(env.sim.requests.at(-1)!.ok);
  });

  test('attachVolume: the CLI polls the job and prints its jobresult', async () => {
    const v = env.state.addVolume({ name: 'cli-attach', size: 2 ** 30, zoneid: env.zone.id });
    const vm = env.targets[0]!.id;
    const r = await run(['attachVolume', `id=${v.id}`, `virtualmachineid=${vm}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    const vol = json(r.stdout).volume as Record<string, unknown>;
    assert.equal(vol.id, v.id);
    assert.equal(vol.virtualmachineid, vm);
    assert.equal(vol.deviceid, 1);
    assert.ok(
      env.sim.requests.some((x) => x.command === 'queryAsyncJobResult' && x.ok),
      'it polled the job',
    );
    assert.equal(env.state.volumes.get(v.id)!.vmId, vm);

    // A job failure is reported by the CLI as such (exit 1).
    const again = await run(['attachVolume', `id=${v.id}`, `virtualmachineid=${vm}`]);
    assert.equal(again.exitCode, 1);
    assert.match(again.stdout + again.stderr, /Please specify a volume that is not attached to any VM\./);
  });

  test('--post deleteVolume: form POST signed and accepted; an error body is shown with exit 1', async () => {
    const v = env.state.addVolume({ name: 'cli-delete', size: 2 ** 30, zoneid: env.zone.id });
    const r = await run(['--post', 'deleteVolume', `id=${v.id}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(json(r.stdout).success, true);
    const last = env.sim.requests.at(-1)!;
    assert.deepEqual([last.command, last.method, last.ok], ['deleteVolume', 'POST', true]);
    assert.equal(env.state.volumes.get(v.id)!.removed, true);
    const again = await run(['--post', 'deleteVolume', `id=${v.id}`]);
    assert.equal(again.exitCode, 1);
    assert.match(again.stdout + again.stderr, /Unable to find volume with ID/);
  });

  test('a wrong secret is refused with CloudStack’s 401 body', async () => {
    const r = await execa(cli!, ['listVolumes'], {
      reject: false,
      env: {
        HOME: home,
        CLOUDSTACK_ENDPOINT: env.url,
        CLOUDSTACK_KEY: env.apiKey,
        CLOUDSTACK_SECRET: 'wrong',
      },
      timeout: 60_000,
    });
    assert.equal(r.exitCode, 1);
    assert.match(r.stdout + r.stderr, /unable to verify user credentials and\/or request signature/);
  });
});
