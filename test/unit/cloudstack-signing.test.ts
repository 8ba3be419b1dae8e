import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { expiresIn, javaEncode, sign, signedQuery, stringToSign } from '../../src/cloudstack/signing.js';
import { diskSerialFor } from '../../src/cloudstack/serial.js';

const hmac = (s: string, key: string) => createHmac('sha1', key).update(s).digest('base64');

// Vectors: CloudStack's signing guide and signatures cross-checked with python3-cs and
// cloudstack-go (§1.4 A–C); the server rule is ApiServer.verifyRequest.
test('the published attachVolume vector (§1.4 B)', () => {
  const params = {
    apiKey: 'demo-api-key',
    command: 'attachVolume',
    id: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
    virtualmachineid: '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
    response: 'json',
    signatureversion: '3',
    expires: '2030-01-01T00:00:00Z',
  };
  // The string the server signs, written out by hand (not by our encoder).
  const expected =
    'apikey=demo-api-key&command=attachvolume&expires=2030-01-01t00%3a00%3a00z&id=8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f&response=json&signatureversion=3&virtualmachineid=3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
  assert.equal(stringToSign(params), expected);
  assert.equal(sign(params, 'demo-secret-key'), 'DoRkiIyTDv08hksyTMDrXqOEQWQ=');
  assert.equal(hmac(expected, 'demo-secret-key'), 'DoRkiIyTDv08hksyTMDrXqOEQWQ=');
  assert.equal(sign({ ...params, signature: 'ignored' }, 'demo-secret-key'), 'DoRkiIyTDv08hksyTMDrXqOEQWQ=');
});

test('the official docs listUsers vector (§1.4 A)', () => {
  const params = {
    apikey: 'plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg',
    command: 'listUsers',
    response: 'json',
  };
  assert.equal(
    sign(params, 'VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ'),
    'TTpdDq/7j/J58XCRHomKoQXEQds=',
  );
});

test('Java URLEncoder rules: * kept, ~ escaped, space as %20, UTF-8 bytes (§1.2, §1.4 C)', () => {
  assert.equal(javaEncode('data disk*1+x~é'), 'data%20disk*1%2Bx%7E%C3%A9');
  assert.equal(javaEncode("a!b'c(d)e"), 'a%21b%27c%28d%29e');
  const base = {
    apiKey: 'demo-api-key',
    command: 'createVolume',
    diskofferingid: '9a8b7c6d-0000-1111-2222-333344445555',
    size: '10',
    zoneid: '1b2c3d4e-0000-1111-2222-333344445555',
    response: 'json',
    signatureversion: '3',
    expires: '2030-01-01T00:00:00Z',
  };
  assert.equal(sign({ ...base, name: 'data disk*1+x' }, 'demo-secret-key'), 'qmmSB4VnO+McaiW/JosyslX0V5s=');
  assert.equal(sign({ ...base, name: 'data disk*1+x~é' }, 'demo-secret-key'), 'pE8w5AA6WDZd85qL3qq0FfJRtqI=');
});

test('the KVM disk serial is the UUID without dashes, first 20 characters (§4)', () => {
  assert.equal(diskSerialFor('8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f'), '8a4f3a2e1c2b4d5e9f60');
});

test('on the wire the signature is percent-encoded (+ / =) and values Java-encoded (fact 3)', () => {
  const params = {
    apiKey: 'demo-api-key',
    command: 'attachVolume',
    id: '8a4f3a2e-1c2b-4d5e-9f60-7a8b9c0d1e2f',
    virtualmachineid: '3f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
    response: 'json',
    signatureversion: '3',
    expires: '2030-01-01T00:00:00Z',
  };
  const q = signedQuery(params, 'demo-secret-key');
  assert.ok(q.endsWith('&signature=DoRkiIyTDv08hksyTMDrXqOEQWQ%3D'), q);
  assert.ok(
    q.includes('expires=2030-01-01T00%3A00%3A00Z'),
    'case kept on the wire, only the signed string is lowercased',
  );
  // The query decodes back to exactly the signed parameters (what the server verifies).
  const back = Object.fromEntries(new URLSearchParams(q));
  assert.equal(back.signature, 'DoRkiIyTDv08hksyTMDrXqOEQWQ=');
  delete back.signature;
  assert.deepEqual(back, params);
  // A signature containing + and / (vector C) survives the trip.
  const c = signedQuery({ a: 'b' }, 'k');
  assert.equal(new URLSearchParams(c).get('signature'), hmac('a=b', 'k'));
});

test('names sort as sent (case-sensitive, before lowercasing) and are not encoded (§1.1)', () => {
  // 'Zeta' < 'alpha' in UTF-16 order; lowercasing first would put alpha first.
  assert.equal(stringToSign({ alpha: '1', Zeta: '2' }), 'zeta=2&alpha=1');
  assert.equal(stringToSign({ 'tags[0].key': 'a b' }), 'tags[0].key=a%20b');
});

test("expires for signatureversion 3 is yyyy-MM-dd'T'HH:mm:ss+0000, the pattern old releases parse too", () => {
  assert.equal(expiresIn(60_000, Date.parse('2029-12-31T23:59:00.500Z')), '2030-01-01T00:00:00+0000');
  assert.equal(expiresIn(0, Date.parse('2026-12-02T00:40:00Z')), '2026-12-02T00:40:00+0000');
  assert.match(expiresIn(10 * 60_000), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
  // The + must reach the server as %2B (a raw + decodes as a space, an unparsable date → 401).
  const params = {
    apiKey: 'k',
    command: 'listZones',
    expires: expiresIn(0, Date.parse('2030-01-01T00:00:00Z')),
  };
  assert.ok(signedQuery(params, 's').includes('expires=2030-01-01T00%3A00%3A00%2B0000'));
  assert.equal(stringToSign(params), 'apikey=k&command=listzones&expires=2030-01-01t00%3a00%3a00%2b0000');
});
