// The simulator's wire behaviour, field by field, against what CloudStack's server code does
// (section numbers: §1 signing, §2 commands and envelopes, §3 volume behaviour).
// Requests are made raw (not through our client) so every byte the simulator returns is seen.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startSimulator, type RunningSimulator } from '../../harness/cloudstack-sim/index.js';
import { raw } from './cloudstack-helpers.js';

// The published vectors use a fixed expires (2030-01-01): they are valid until then.
const VEC = {
  key: 'demo-api-key',
  secret: 'demo-secret-key',
  volume: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
  vm: '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
  zone: '1b2c3d4e-0000-1111-2222-333344445555',
  offering: '9a8b7c6d-0000-1111-2222-333344445555',
};

let env: RunningSimulator;
const req = (params: Record<string, string>, method: 'GET' | 'POST' = 'GET', secret = VEC.secret) =>
  raw(env.url, { response: 'json', apiKey: VEC.key, ...params }, secret, method);

before(async () => {
  env = await startSimulator({ apiKey: VEC.key, secretKey: VEC.secret, jobDurationMs: 0 });
  env.state.addZone('vector-zone', VEC.zone);
  env.state.addDiskOffering('vector-offering', VEC.offering);
  env.state.addVm({ name: 'vector-vm', zoneid: VEC.zone, id: VEC.vm });
  env.state.addVolume({ name: 'vector-volume', size: 2 ** 30, zoneid: VEC.zone, id: VEC.volume });
});
after(() => env.close());

describe('signature verification over the wire (§1)', () => {
  test('the published attachVolume request, byte for byte, is accepted (§1.4 B)', async () => {
    const q =
      `apiKey=demo-api-key&command=attachVolume&expires=2030-01-01T00%3A00%3A00Z&id=${VEC.volume}` +
      `&response=json&signatureversion=3&virtualmachineid=${VEC.vm}`;
    const ok = await fetch(`${env.url}?${q}&signature=DoRkiIyTDv08hksyTMDrXqOEQWQ%3D`);
    assert.equal(ok.status, 200);
    const body = (await ok.json()) as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(body.attachvolumeresponse!), ['jobid']);
    // One changed character of the signature, or of a parameter, is refused.
    assert.equal((await fetch(`${env.url}?${q}&signature=DoRkiIyTDv08hksyTMDrXqOEQWQ%3E`)).status, 401);
    const tampered = q.replace('signatureversion=3', 'signatureversion=3&deviceid=5');
    assert.equal(
      (await fetch(`${env.url}?${tampered}&signature=DoRkiIyTDv08hksyTMDrXqOEQWQ%3D`)).status,
      401,
    );
  });

  test('a signature with + must be percent-encoded on a GET, or the server reads a space (fact 3, §1.4 C)', async () => {
    const q =
      `apiKey=demo-api-key&command=createVolume&diskofferingid=${VEC.offering}&expires=2030-01-01T00%3A00%3A00Z` +
      `&name=data%20disk*1%2Bx&response=json&signatureversion=3&size=10&zoneid=${VEC.zone}`;
    const sig = 'qmmSB4VnO+McaiW/JosyslX0V5s=';
    assert.equal((await fetch(`${env.url}?${q}&signature=${encodeURIComponent(sig)}`)).status, 200);
    assert.equal((await fetch(`${env.url}?${q}&signature=${sig}`)).status, 401);
  });

  test('~ is signed as %7E (server rule), not raw as Go/Python clients do (§1.4 C)', async () => {
    const base =
      `apiKey=demo-api-key&command=createVolume&diskofferingid=${VEC.offering}&expires=2030-01-01T00%3A00%3A00Z` +
      `&name=data%20disk*1%2Bx~%C3%A9&response=json&signatureversion=3&size=10&zoneid=${VEC.zone}`;
    const server = encodeURIComponent('pE8w5AA6WDZd85qL3qq0FfJRtqI=');
    const clients = encodeURIComponent('ImiLoCDS5/wXP4CIwd8L78/Qyqw=');
    assert.equal((await fetch(`${env.url}?${base}&signature=${server}`)).status, 200);
    assert.equal((await fetch(`${env.url}?${base}&signature=${clients}`)).status, 401);
  });

  test('POST form fields are signed and merged with the query (§1.1)', async () => {
    const r = await req(
      { command: 'listVolumes', id: VEC.volume, signatureversion: '3', expires: '2030-01-01T00:00:00Z' },
      'POST',
    );
    assert.equal(r.status, 200);
    assert.equal((r.body.listvolumesresponse!.volume as { id: string }[])[0]!.id, VEC.volume);
  });

  test('401s: wrong secret, unknown key, missing signature, expired or malformed expires (fact 4, 5)', async () => {
    const list = { command: 'listVolumes' };
    const expect401 = async (r: Promise<Awaited<ReturnType<typeof req>>>, why: string) => {
      const x = await r;
      assert.equal(x.status, 401, why);
      // fact 5: exact body, no cserrorcode.
      assert.deepEqual(
        x.body,
        {
          listvolumesresponse: {
            uuidList: [],
            errorcode: 401,
            errortext: 'unable to verify user credentials and/or request signature',
          },
        },
        why,
      );
      assert.equal(x.headers.get('content-type'), 'application/json; charset=UTF-8');
    };
    await expect401(req(list, 'GET', 'wrong-secret'), 'wrong secret');
    await expect401(req({ ...list, apiKey: 'someone-else' }), 'unknown key');
    await expect401(req({ ...list, signatureversion: '3', expires: '2001-01-01T00:00:00Z' }), 'expired');
    await expect401(req({ ...list, signatureversion: '3', expires: 'tomorrow' }), 'malformed expires');
    await expect401(req({ ...list, signatureversion: '3' }), 'v3 without expires');
    const unsigned = await fetch(`${env.url}?command=listVolumes&response=json&apiKey=${VEC.key}`);
    assert.equal(unsigned.status, 401, 'no signature');
  });

  test('expires formats the server parses are accepted; without signatureversion 3 it is not checked (fact 4)', async () => {
    for (const expires of [
      '2030-01-01T00:00:00+0000', // CloudStack's own pattern: what our client sends
      '2030-01-01T00:00:00Z', // cloudstack-go
      '2030-01-01T00:00:00+00:00',
      '2030-01-01T05:30:00.250+05:30',
      '2030-01-01T00:00:00Z+0000', // the legacy literal-Z form
    ])
      assert.equal(
        (await req({ command: 'listZones', signatureversion: '3', expires })).status,
        200,
        expires,
      );
    // What DateUtil.parseTZDateString cannot parse is a 401, however far in the future.
    for (const expires of [
      '2030-01-01T00:00:00', // no offset
      '2030-01-01 00:00:00Z',
      '2030-01-01',
      '2030-02-30T00:00:00Z', // no such day
      '2030-01-01T24:00:00Z',
      '2030-01-01T00:00:00+25:00',
      '1893456000',
    ])
      assert.equal(
        (await req({ command: 'listZones', signatureversion: '3', expires })).status,
        401,
        expires,
      );
    // python cs sends signatureVersion in camel case (§1.3); names are matched ignoring case.
    assert.equal(
      (await req({ command: 'listZones', signatureVersion: '3', expires: '2001-01-01T00:00:00+0000' }))
        .status,
      401,
    );
    assert.equal((await req({ command: 'listZones', expires: '2001-01-01T00:00:00Z' })).status, 200);
  });

  test('an unknown command is a 401 under errorresponse (fact 5)', async () => {
    const r = await req({ command: 'launchRockets' });
    assert.equal(r.status, 401);
    assert.deepEqual(Object.keys(r.body), ['errorresponse']);
  });

  test('without response=json the answer is XML (the real default), never JSON passed off as XML (§6)', async () => {
    const r = await raw(env.url, { command: 'listVolumes', apiKey: VEC.key }, VEC.secret);
    assert.match(r.headers.get('content-type') ?? '', /^text\/xml/);
    assert.match(r.text, /^<\?xml/);
    assert.notEqual(r.status, 200);
  });
});

describe('envelopes and fields (§2)', () => {
  test('listVirtualMachines: count + virtualmachine[], KVM fields and types (§2.6)', async () => {
    const r = await req({ command: 'listVirtualMachines', id: VEC.vm });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json; charset=UTF-8');
    const inner = r.body.listvirtualmachinesresponse!;
    assert.equal(inner.count, 1);
    const vm = (inner.virtualmachine as Record<string, unknown>[])[0]!;
    assert.equal(vm.id, VEC.vm);
    assert.equal(vm.name, 'vector-vm');
    assert.equal(vm.displayname, 'vector-vm');
    assert.equal(vm.state, 'Running');
    assert.equal(vm.hypervisor, 'KVM');
    assert.equal(vm.zoneid, VEC.zone);
    assert.equal(vm.zonename, 'vector-zone');
    assert.match(String(vm.instancename), /^i-2-\d+-VM$/);
    assert.equal(vm.rootdeviceid, 0);
    assert.match(String(vm.created), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
    assert.ok(Array.isArray(vm.nic));
  });

  test('listVolumes: typed fields, VM fields only when attached; empty list is {} (§2.5, §2.8)', async () => {
    const r = await req({ command: 'listVolumes', virtualmachineid: VEC.vm, type: 'ROOT' });
    const inner = r.body.listvolumesresponse!;
    assert.equal(inner.count, 1);
    const root = (inner.volume as Record<string, unknown>[])[0]!;
    assert.equal(root.type, 'ROOT');
    assert.equal(root.deviceid, 0);
    assert.equal(typeof root.size, 'number');
    assert.equal(root.virtualmachineid, VEC.vm);
    assert.equal(root.vmname, 'vector-vm');
    assert.equal(root.vmstate, 'Running');
    assert.equal(root.state, 'Ready');
    assert.equal(root.hypervisor, 'KVM');
    assert.equal(root.destroyed, false);
    assert.match(String(root.attached), /\+0000$/);

    const empty = await req({ command: 'listVolumes', name: 'no-such-volume' });
    assert.equal(empty.status, 200);
    assert.equal(empty.text, '{"listvolumesresponse":{}}');
    const pastEnd = await req({
      command: 'listVolumes',
      virtualmachineid: VEC.vm,
      type: 'ROOT',
      page: '2',
      pagesize: '1',
    });
    assert.deepEqual(pastEnd.body, { listvolumesresponse: { count: 1 } });
  });

  test('listVirtualMachines / listZones with an unknown id: 431 with CloudStack’s text, not an empty list (§2.5)', async () => {
    const missing = '00000000-aaaa-bbbb-cccc-000000000000';
    for (const [command, key] of [
      ['listVirtualMachines', 'listvirtualmachinesresponse'],
      ['listZones', 'listzonesresponse'],
    ] as const) {
      const r = await req({ command, id: missing });
      assert.equal(r.status, 431, command);
      assert.deepEqual(r.body, {
        [key]: {
          uuidList: [],
          errorcode: 431,
          cserrorcode: 9999,
          errortext: `Unable to execute API command ${command.toLowerCase()} due to invalid value. Invalid parameter id value=${missing} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`,
        },
      });
    }
    // Known ids still list; an unmatched name is still the empty list.
    const zone = await req({ command: 'listZones', id: VEC.zone });
    assert.deepEqual(
      (zone.body.listzonesresponse!.zone as { id: string }[]).map((z) => z.id),
      [VEC.zone],
    );
    const vm = await req({ command: 'listVirtualMachines', id: VEC.vm });
    assert.equal(vm.body.listvirtualmachinesresponse!.count, 1);
    assert.equal(
      (await req({ command: 'listVirtualMachines', name: 'nobody' })).text,
      '{"listvirtualmachinesresponse":{}}',
    );
  });

  test('control characters in any value: 431/9999 naming the parameter, nothing done; LF and CR pass (ApiServer)', async () => {
    const create = { command: 'createVolume', size: '1', zoneid: VEC.zone, diskofferingid: VEC.offering };
    const volumes = env.state.volumes.size;
    for (const [name, method] of [
      ['tab\there', 'GET'],
      ['nul\u0000', 'POST'],
      ['del\u007f', 'GET'],
      ['esc\u001b[0m', 'POST'],
    ] as const) {
      const r = await req({ ...create, name }, method);
      assert.equal(r.status, 431, JSON.stringify(name));
      assert.deepEqual(r.body, {
        createvolumeresponse: {
          uuidList: [],
          errorcode: 431,
          cserrorcode: 9999,
          errortext: 'Received value containing illegal ASCII non-printable characters for parameter name',
        },
      });
    }
    assert.equal(env.state.volumes.size, volumes, 'no volume was created');
    // Any parameter, not only names.
    const list = await req({ command: 'listVolumes', keyword: 'a\u0001b' });
    assert.match(String(list.body.listvolumesresponse!.errortext), /for parameter keyword$/);
    // CloudStack's class leaves out LF and CR.
    const ok = await req({ ...create, name: 'two\r\nlines' });
    assert.equal(ok.status, 200);
    assert.equal(env.state.volumes.size, volumes + 1);
  });

  test('unknown UUID → synchronous 431 with the text clients match (§2.5)', async () => {
    const missing = '00000000-aaaa-bbbb-cccc-000000000000';
    const r = await req({ command: 'attachVolume', id: missing, virtualmachineid: VEC.vm });
    assert.equal(r.status, 431);
    const e = r.body.attachvolumeresponse!;
    assert.deepEqual(Object.keys(e).sort(), ['cserrorcode', 'errorcode', 'errortext', 'uuidList']);
    assert.equal(e.errorcode, 431);
    assert.equal(e.cserrorcode, 9999);
    assert.equal(
      e.errortext,
      `Unable to execute API command attachvolume due to invalid value. Invalid parameter id value=${missing} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`,
    );
    // ApiServlet repeats the text in X-Description (fact 6).
    assert.match(decodeURIComponent(r.headers.get('x-description') ?? ''), /entity does not exist/);
    const vmMissing = await req({ command: 'attachVolume', id: VEC.volume, virtualmachineid: missing });
    assert.equal(vmMissing.status, 431);
    assert.match(
      String(vmMissing.body.attachvolumeresponse!.errortext),
      /Invalid parameter virtualmachineid value=/,
    );
  });

  test('missing required parameter → 431/9999 "due to missing parameter" (§6)', async () => {
    const r = await req({ command: 'deleteVolume' });
    assert.equal(r.status, 431);
    assert.equal(r.body.deletevolumeresponse!.cserrorcode, 9999);
    assert.equal(
      r.body.deletevolumeresponse!.errortext,
      'Unable to execute API command deletevolume due to missing parameter id',
    );
  });

  test('createVolume: {id, jobid} at once, validation synchronous with 431/4350 (§2.3)', async () => {
    const start = await req({
      command: 'createVolume',
      name: 'c1',
      size: '3',
      zoneid: VEC.zone,
      diskofferingid: VEC.offering,
    });
    assert.equal(start.status, 200);
    assert.deepEqual(Object.keys(start.body.createvolumeresponse!).sort(), ['id', 'jobid']);
    const id = String(start.body.createvolumeresponse!.id);
    // The row exists at once, Allocated, size in bytes, not on storage yet (no path/hypervisor).
    const v = (await req({ command: 'listVolumes', id })).body.listvolumesresponse!.volume as Record<
      string,
      unknown
    >[];
    assert.equal(v[0]!.state, 'Allocated');
    assert.equal(v[0]!.size, 3 * 2 ** 30);
    assert.equal('path' in v[0]!, false);
    const offered = { zoneid: VEC.zone, diskofferingid: VEC.offering };
    for (const [params, text] of [
      [{ size: '3', zoneid: VEC.zone }, /^At least one of disk Offering ID or snapshot ID/],
      [offered, /^This disk offering requires a custom size specified$/],
      [{ size: '0', ...offered }, /^Disk size must be larger than 0$/],
      [{ size: '-5', ...offered }, /^Disk size must be larger than 0$/],
      // custom.diskoffering.size.max defaults to 1024 (GB).
      [{ size: '1025', ...offered }, /^Volume size: 1025 GB is out of allowed range\. Min: 1\. Max: 1024$/],
    ] as const) {
      const bad = await req({ command: 'createVolume', name: 'bad', ...params });
      assert.equal(bad.status, 431, JSON.stringify(params));
      assert.equal(bad.body.createvolumeresponse!.cserrorcode, 4350);
      assert.match(String(bad.body.createvolumeresponse!.errortext), text);
    }
    // Not a Java long: refused while parsing parameters (9999).
    const frac = await req({ command: 'createVolume', name: 'bad', size: '1.5', ...offered });
    assert.equal(frac.status, 431);
    assert.deepEqual(frac.body.createvolumeresponse, {
      uuidList: [],
      errorcode: 431,
      cserrorcode: 9999,
      errortext: 'Unable to execute API command createvolume due to invalid value 1.5 for parameter size',
    });
    // The bounds themselves are allowed, and the maximum is configurable.
    const max = await req({ command: 'createVolume', name: 'max', size: '1024', ...offered });
    assert.equal(max.status, 200);
    env.state.customDiskMaxGb = 2048;
    try {
      assert.equal(
        (await req({ command: 'createVolume', name: 'big', size: '2048', ...offered })).status,
        200,
      );
    } finally {
      env.state.customDiskMaxGb = 1024;
    }
  });

  test('async job: pending, done and failed shapes of queryAsyncJobResult (§2.7)', async () => {
    const vm = env.state.addVm({ name: 'job-shapes', zoneid: VEC.zone });
    const c = await req({
      command: 'createVolume',
      name: 'j1',
      size: '1',
      zoneid: VEC.zone,
      diskofferingid: VEC.offering,
    });
    const volume = String(c.body.createvolumeresponse!.id);
    env.sim.jobDurationMs = 60_000; // stays pending until we look
    let jobid: string;
    try {
      const start = await req({ command: 'attachVolume', id: volume, virtualmachineid: vm.id });
      jobid = String(start.body.attachvolumeresponse!.jobid);
      const pending = (await req({ command: 'queryAsyncJobResult', jobid })).body
        .queryasyncjobresultresponse!;
      assert.equal(pending.jobstatus, 0);
      assert.equal(pending.jobresultcode, 0);
      for (const k of ['jobresult', 'jobresulttype', 'completed']) assert.equal(k in pending, false, k);
      assert.equal(pending.cmd, 'org.apache.cloudstack.api.command.user.volume.AttachVolumeCmd');
      assert.equal(pending.jobinstancetype, 'Volume');
      assert.equal(pending.jobinstanceid, volume);
      assert.equal(pending.jobid, jobid);
    } finally {
      env.sim.jobDurationMs = 0;
    }
    // The pending job's timer is 60 s away: a second attach is what finishes first here, so
    // look at a fresh job instead (jobDurationMs 0 → done after one turn of the event loop).
    const start = await req({ command: 'attachVolume', id: volume, virtualmachineid: vm.id });
    const id2 = String(start.body.attachvolumeresponse!.jobid);
    const done = await waitJob(id2);
    assert.equal(done.jobstatus, 1);
    assert.equal(done.jobresultcode, 0);
    assert.equal(done.jobresulttype, 'object');
    const vol = (done.jobresult as { volume: Record<string, unknown> }).volume;
    assert.equal(vol.virtualmachineid, vm.id);
    assert.equal(vol.deviceid, 1);
    assert.equal(vol.state, 'Ready');
    assert.match(String(done.completed), /\+0000$/);

    // Attaching it again fails inside the job, the query itself stays HTTP 200 (fact 8).
    const again = await req({ command: 'attachVolume', id: volume, virtualmachineid: vm.id });
    assert.equal(again.status, 200);
    const failed = await waitJob(String(again.body.attachvolumeresponse!.jobid));
    assert.equal(failed.jobstatus, 2);
    assert.equal(failed.jobresultcode, 431);
    assert.equal(failed.jobresulttype, 'object');
    assert.deepEqual(failed.jobresult, {
      errorcode: 431,
      errortext: 'Please specify a volume that is not attached to any VM.',
    });
  });

  test('deleteVolume: synchronous {success:true} (boolean); attached → 431/4350; again → 431 (§2.4)', async () => {
    const a = await req({
      command: 'createVolume',
      name: 'a1',
      size: '1',
      zoneid: VEC.zone,
      diskofferingid: VEC.offering,
    });
    const aid = String(a.body.createvolumeresponse!.id);
    const att = await req({ command: 'attachVolume', id: aid, virtualmachineid: VEC.vm });
    assert.equal((await waitJob(String(att.body.attachvolumeresponse!.jobid))).jobstatus, 1);
    const attached = await req({ command: 'deleteVolume', id: aid });
    assert.equal(attached.status, 431);
    assert.equal(
      attached.body.deletevolumeresponse!.errortext,
      'Please specify a volume that is not attached to any VM.',
    );
    const c = await req({
      command: 'createVolume',
      name: 'd1',
      size: '1',
      zoneid: VEC.zone,
      diskofferingid: VEC.offering,
    });
    const id = String(c.body.createvolumeresponse!.id);
    const ok = await req({ command: 'deleteVolume', id }, 'POST');
    assert.equal(ok.text, '{"deletevolumeresponse":{"success":true}}');
    const list = await req({ command: 'listVolumes', name: 'd1' });
    assert.equal(list.text, '{"listvolumesresponse":{}}', 'gone from listVolumes');
    const twice = await req({ command: 'deleteVolume', id });
    assert.equal(twice.status, 431);
    assert.match(String(twice.body.deletevolumeresponse!.errortext), /^Unable to find volume with ID: \d+$/);
  });

  test('detachVolume with neither id nor (vm, device) fails in the job (§2.2); bad deviceid → 530 in job (§3)', async () => {
    const r = await req({ command: 'detachVolume' });
    assert.equal(r.status, 200);
    const j = await waitJob(String(r.body.detachvolumeresponse!.jobid));
    assert.equal(j.jobresultcode, 431);
    assert.match(String((j.jobresult as { errortext: string }).errortext), /either a volume id, or a tuple/);

    const c = await req({
      command: 'createVolume',
      name: 'dev3',
      size: '1',
      zoneid: VEC.zone,
      diskofferingid: VEC.offering,
    });
    const a = await req({
      command: 'attachVolume',
      id: String(c.body.createvolumeresponse!.id),
      virtualmachineid: VEC.vm,
      deviceid: '3',
    });
    const failed = await waitJob(String(a.body.attachvolumeresponse!.jobid));
    assert.equal(failed.jobresultcode, 530);
    assert.match(
      String((failed.jobresult as { errortext: string }).errortext),
      /deviceId should be 0,1,2,4-33/,
    );
  });
});

/** Poll a job until it leaves status 0 (no sleeping: yields to the event loop between polls). */
async function waitJob(jobid: string): Promise<Record<string, unknown>> {
  for (;;) {
    const j = (await req({ command: 'queryAsyncJobResult', jobid })).body.queryasyncjobresultresponse!;
    if (j.jobstatus !== 0) return j;
    await new Promise((r) => setImmediate(r));
  }
}
