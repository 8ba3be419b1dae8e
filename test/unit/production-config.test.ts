import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parseEnvFile } from '../../src/config/env-file.js';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import {
  dbPoolTlsOptions,
  parseDuration,
  readTlsMaterial,
  resolveSecretFiles,
  SettingFileError,
} from '../../src/config/production.js';
import { explainHandshakeError } from '../../src/temporal/probe.js';
import { temporalConnectionOptions } from '../../src/temporal/connection.js';

let dir: string;
before(async () => (dir = await mkdtemp(path.join(tmpdir(), 'vl-prodcfg-'))));
after(async () => rm(dir, { recursive: true, force: true }));

const file = async (name: string, content: string) => {
  const p = path.join(dir, name);
  await writeFile(p, content);
  return p;
};
/** The ConfigError's issues as `FIELD: message` lines. */
const issues = (env: NodeJS.ProcessEnv): string[] => {
  try {
    loadConfig(env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.issues.map((i) => `${i.field}: ${i.message}`);
  }
  assert.fail('expected a ConfigError');
};

test('production settings default to the development behaviour', () => {
  const c = loadConfig({});
  assert.equal(c.TEMPORAL_TLS, undefined);
  assert.equal(c.TEMPORAL_API_KEY, undefined);
  assert.equal(c.DB_TLS, undefined);
  assert.equal(c.WORKER_SHUTDOWN_GRACE, 30_000);
  assert.deepEqual(temporalConnectionOptions(c), { address: '127.0.0.1:7233' });
  assert.deepEqual(dbPoolTlsOptions(c), {});
});

test('secrets come from *_FILE: one trailing newline dropped, never from argv', async () => {
  const pw = await file('db-password', 's3cret with spaces \n');
  const cs = await file('cs-secret', 'abc\r\n');
  const tok = await file('api-token', 'tok');
  const c = loadConfig({ DB_PASSWORD_FILE: pw, CLOUDSTACK_SECRET_KEY_FILE: cs, API_TOKEN_FILE: tok });
  assert.equal(c.DB_PASSWORD, 's3cret with spaces ');
  assert.equal(c.CLOUDSTACK_SECRET_KEY, 'abc');
  assert.equal(c.API_TOKEN, 'tok');
  assert.equal((c as Record<string, unknown>).DB_PASSWORD_FILE, undefined, 'the _FILE variable is consumed');
});

test('a secret file that cannot be used is named, with why', async () => {
  const empty = await file('empty', '\n');
  const out = issues({
    DB_PASSWORD_FILE: path.join(dir, 'missing'),
    CLOUDSTACK_SECRET_KEY_FILE: 'relative/path',
    API_TOKEN_FILE: empty,
    TEMPORAL_API_KEY: 'inline',
    TEMPORAL_API_KEY_FILE: empty,
  });
  assert.ok(
    out.includes(`DB_PASSWORD_FILE: cannot read ${path.join(dir, 'missing')}: ENOENT`),
    out.join('\n'),
  );
  assert.ok(out.includes('CLOUDSTACK_SECRET_KEY_FILE: must be an absolute file path'), out.join('\n'));
  assert.ok(out.includes(`API_TOKEN_FILE: ${empty} is empty`), out.join('\n'));
  assert.ok(
    out.includes('TEMPORAL_API_KEY_FILE: set either TEMPORAL_API_KEY or TEMPORAL_API_KEY_FILE, not both'),
  );
});

test('TLS settings are checked together, each problem named on the variable to change', () => {
  assert.deepEqual(issues({ TEMPORAL_TLS_CERT_FILE: '/etc/x.pem' }), [
    'TEMPORAL_TLS_KEY_FILE: required with TEMPORAL_TLS_CERT_FILE',
  ]);
  assert.deepEqual(issues({ DB_TLS_KEY_FILE: '/etc/x.key' }), [
    'DB_TLS_CERT_FILE: required with DB_TLS_KEY_FILE',
  ]);
  assert.deepEqual(issues({ TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: 'k' }), [
    'TEMPORAL_TLS: is false but TEMPORAL_API_KEY is set (an API key or certificate needs TLS)',
  ]);
  assert.match(
    issues({ TEMPORAL_TLS_CA_FILE: 'ca.pem' })[0]!,
    /^TEMPORAL_TLS_CA_FILE: must be an absolute file path/,
  );
  assert.match(
    issues({ TEMPORAL_TLS_SERVER_NAME: 'bad name' })[0]!,
    /^TEMPORAL_TLS_SERVER_NAME: must be a DNS name/,
  );
  assert.match(issues({ DB_TLS: 'yes' })[0]!, /^DB_TLS: /);
  // `KEY=` in an env file means unset, as a commented-out line does.
  assert.equal(loadConfig({ TEMPORAL_TLS_CA_FILE: '', TEMPORAL_TLS: '' }).TEMPORAL_TLS_CA_FILE, undefined);
});

test('TLS is on with a CA, a certificate or an API key; the API key rides along', async () => {
  const c = loadConfig({ TEMPORAL_API_KEY: 'key-1' });
  assert.deepEqual(temporalConnectionOptions(c), { address: '127.0.0.1:7233', tls: {}, apiKey: 'key-1' });
  const ca = await file('not-a-ca.pem', 'hello\n');
  assert.throws(
    () => temporalConnectionOptions(loadConfig({ TEMPORAL_TLS_CA_FILE: ca })),
    (e: unknown) =>
      e instanceof SettingFileError &&
      e.field === 'TEMPORAL_TLS_CA_FILE' &&
      /holds no PEM certificate/.test(e.message),
  );
  assert.throws(
    () => temporalConnectionOptions(loadConfig({ TEMPORAL_TLS_CA_FILE: path.join(dir, 'nope.pem') })),
    /TEMPORAL_TLS_CA_FILE: cannot read .*nope\.pem: ENOENT/,
  );
  assert.throws(
    () => dbPoolTlsOptions(loadConfig({ DB_TLS_CA_FILE: ca })),
    (e: unknown) => e instanceof SettingFileError && e.field === 'DB_TLS_CA_FILE',
  );
  assert.deepEqual(readTlsMaterial({ ca: 'A', cert: 'B', key: 'C' }, {}), {});
});

test('WORKER_SHUTDOWN_GRACE and WORKER_BUILD_ID', () => {
  assert.equal(loadConfig({ WORKER_SHUTDOWN_GRACE: '2m' }).WORKER_SHUTDOWN_GRACE, 120_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('10 min'), undefined);
  assert.match(
    issues({ WORKER_SHUTDOWN_GRACE: 'soon' })[0]!,
    /^WORKER_SHUTDOWN_GRACE: must be a duration like/,
  );
  assert.equal(loadConfig({ WORKER_BUILD_ID: '1.2.3+g1' }).WORKER_BUILD_ID, '1.2.3+g1');
  assert.match(issues({ WORKER_BUILD_ID: 'a b' })[0]!, /^WORKER_BUILD_ID: /);
});

test('resolveSecretFiles leaves the environment it was given alone', () => {
  const env = { DB_PASSWORD_FILE: '/x', OTHER: '1' };
  const r = resolveSecretFiles(env, () => 'pw\n');
  assert.deepEqual(r, { env: { DB_PASSWORD: 'pw', OTHER: '1' }, issues: [] });
  assert.deepEqual(env, { DB_PASSWORD_FILE: '/x', OTHER: '1' });
});

test('env files are read as systemd reads them', () => {
  assert.deepEqual(
    parseEnvFile(
      [
        '# comment',
        '; also a comment',
        '',
        'A=1',
        '  B = two words  ',
        'C="quoted # not a comment"',
        "D='single'",
        'E=x # part of the value',
        'F=',
        'not a line',
        '#G=commented',
      ].join('\n'),
    ),
    { A: '1', B: 'two words', C: 'quoted # not a comment', D: 'single', E: 'x # part of the value', F: '' },
  );
});

test('handshake failures in plain words, naming the setting', () => {
  const t = { address: 'temporal.example.org:7233', tls: { ca: Buffer.from('x') } };
  const say = (code: string, message = code) =>
    explainHandshakeError(Object.assign(new Error(message), { code }), t);
  assert.match(say('ECONNREFUSED'), /nothing listens at temporal\.example\.org:7233/);
  assert.match(say('SELF_SIGNED_CERT_IN_CHAIN'), /not signed by the CA in TEMPORAL_TLS_CA_FILE/);
  assert.match(
    say('ERR_TLS_CERT_ALTNAME_INVALID', "Host: x is not in the cert's altnames"),
    /set TEMPORAL_TLS_SERVER_NAME/,
  );
  assert.match(
    say('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'SSL alert number 116'),
    /set TEMPORAL_TLS_CERT_FILE and TEMPORAL_TLS_KEY_FILE/,
  );
  assert.match(
    say('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'sslv3 alert bad certificate: SSL alert number 42'),
    /refused our client certificate \(TEMPORAL_TLS_CERT_FILE\)/,
  );
  assert.match(
    say('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'tlsv1 alert unknown ca: SSL alert number 48'),
    /not signed by a CA the server trusts/,
  );
  assert.match(say('ERR_SSL_WRONG_VERSION_NUMBER', 'wrong version number'), /does not speak TLS/);
  assert.match(say('CERT_HAS_EXPIRED'), /server's certificate has expired/);
});
