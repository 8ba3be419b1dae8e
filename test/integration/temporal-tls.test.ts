// Temporal over mutual TLS: the client, the host worker and the control worker (the real entry
// points, configured only through the environment as systemd would) connect through a TLS
// frontend with a CA and client certificates generated here with openssl; wrong certificates
// fail at once with a message naming the setting to fix.
//
// The Temporal CLI's dev server (`temporal server start-dev`, v1.5.1) has no TLS flags, so the
// TLS frontend is a small mutual-TLS terminating TCP proxy (./tls-helpers.ts: node:tls, ALPN h2,
// requestCert + rejectUnauthorized) in front of the plaintext dev server.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { SettingFileError } from '../../src/config/production.js';
import { probeTemporal } from '../../src/temporal/probe.js';
import { connectClient, TemporalConnectError, type TemporalSettings } from '../../src/temporal/connection.js';
import { connectNative } from '../../src/worker/temporal.js';
import { freshDatabase } from '../support/db.js';
import { pollFor, startService, type Service } from './process-helpers.js';
import { makePki, startMtlsProxy, type Pki } from './tls-helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PLAIN = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
let dir: string;
let pki: Pki;
let proxy: Awaited<ReturnType<typeof startMtlsProxy>>;
const services: Service[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vl-tls-'));
  pki = await makePki(dir);
  proxy = await startMtlsProxy({ upstream: PLAIN, cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert });
});
after(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await proxy?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The environment an operator writes into the env file for mutual TLS. */
const tlsEnv = (over: Record<string, string> = {}): Record<string, string> => ({
  TEMPORAL_ADDRESS: proxy.address,
  TEMPORAL_NAMESPACE: 'default',
  TEMPORAL_TLS_CA_FILE: pki.caCert,
  TEMPORAL_TLS_CERT_FILE: pki.clientCert,
  TEMPORAL_TLS_KEY_FILE: pki.clientKey,
  ...over,
});
const settings = (over: Record<string, string> = {}): TemporalSettings => loadConfig(tlsEnv(over));

async function refusal(over: Record<string, string>): Promise<string> {
  const err = await connectClient(settings(over)).then(
    async (t) => {
      await t.connection.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof TemporalConnectError, `refused with a TemporalConnectError, got ${String(err)}`);
  return err.message;
}

describe('client over mutual TLS', () => {
  test('connects with the CA and client certificate, and the namespace answers', async () => {
    const t = await connectClient(settings());
    try {
      const ns = await t.connection.workflowService.describeNamespace({ namespace: 'default' });
      assert.equal(ns.namespaceInfo?.name, 'default');
    } finally {
      await t.connection.close();
    }
  });

  test('a client certificate from another CA is refused, naming TEMPORAL_TLS_CERT_FILE', async () => {
    const started = Date.now();
    const msg = await refusal({
      TEMPORAL_TLS_CERT_FILE: pki.otherClientCert,
      TEMPORAL_TLS_KEY_FILE: pki.otherClientKey,
    });
    assert.match(msg, /refused our client certificate \(TEMPORAL_TLS_CERT_FILE\)/);
    assert.match(msg, new RegExp(`Temporal at ${proxy.address} \\(TLS\\)`));
    assert.ok(Date.now() - started < 5_000, 'fails at once, not after a connect deadline');
  });

  test('no client certificate: the server requires one', async () => {
    const msg = await refusal({ TEMPORAL_TLS_CERT_FILE: '', TEMPORAL_TLS_KEY_FILE: '' });
    assert.match(msg, /requires a client certificate: set TEMPORAL_TLS_CERT_FILE and TEMPORAL_TLS_KEY_FILE/);
  });

  test("the wrong CA: the server's certificate is not trusted, naming TEMPORAL_TLS_CA_FILE", async () => {
    const msg = await refusal({ TEMPORAL_TLS_CA_FILE: pki.otherCaCert });
    assert.match(msg, /server's certificate is not signed by the CA in TEMPORAL_TLS_CA_FILE/);
  });

  test('a server name the certificate does not carry names TEMPORAL_TLS_SERVER_NAME', async () => {
    const msg = await refusal({ TEMPORAL_TLS_SERVER_NAME: 'temporal.example.org' });
    assert.match(msg, /does not name|TEMPORAL_TLS_SERVER_NAME/);
  });

  test('TLS against the plaintext port: "does not speak TLS"', async () => {
    const msg = await refusal({ TEMPORAL_ADDRESS: PLAIN });
    assert.match(msg, /does not speak TLS/);
  });

  test('plaintext against the TLS port is explained by the probe', async () => {
    const r = await probeTemporal({ address: proxy.address });
    assert.equal(r.ok, false);
    assert.match(
      r.ok ? '' : r.problem,
      /does not answer plaintext gRPC; if it requires TLS, set TEMPORAL_TLS=true/,
    );
  });

  test("a key that is not the certificate's is named before any connection", async () => {
    await assert.rejects(
      connectClient(settings({ TEMPORAL_TLS_KEY_FILE: pki.otherClientKey })),
      (e: unknown) =>
        e instanceof SettingFileError &&
        e.field === 'TEMPORAL_TLS_KEY_FILE' &&
        /is not the key of the certificate/.test(e.message),
    );
  });

  test('the worker connection (Rust core) connects over mutual TLS and is refused alike', async () => {
    const c = await connectNative(settings());
    await c.close();
    await assert.rejects(
      connectNative(
        settings({ TEMPORAL_TLS_CERT_FILE: pki.otherClientCert, TEMPORAL_TLS_KEY_FILE: pki.otherClientKey }),
      ),
      /refused our client certificate \(TEMPORAL_TLS_CERT_FILE\)/,
    );
  });
});

describe('workers over mutual TLS (the real entry points)', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  after(async () => db?.close());

  const env = (over: Record<string, string>): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...process.env, ...tlsEnv(), LOG_LEVEL: 'info' };
    delete e.APPLIANCE_VM_ID; // only where given: no reconcile Schedule for these throw-away workers
    return { ...e, ...over };
  };
  const spawnMain = (main: string, e: NodeJS.ProcessEnv) => {
    const s = startService(process.execPath, ['--import', 'tsx', main], { cwd: ROOT, env: e });
    services.push(s);
    return s;
  };

  async function pollers(queue: string, type: 1 | 2) {
    const t = await connectClient(settings());
    try {
      // TaskQueueType 1 = workflow, 2 = activity (temporal.api.enums.v1.TaskQueueType).
      const r = await t.connection.workflowService.describeTaskQueue({
        namespace: 'default',
        taskQueue: { name: queue, kind: 1 },
        taskQueueType: type,
      });
      return r.pollers.length ? r.pollers : undefined;
    } finally {
      await t.connection.close();
    }
  }

  test('host and control worker poll their queues through the TLS frontend; a wrong certificate stops one at start', async () => {
    db = await freshDatabase('tls');
    const prefix = `tls-${randomUUID().slice(0, 8)}`;
    const appliance = randomUUID();
    const host = spawnMain(
      'src/worker/host-main.ts',
      env({
        TASK_QUEUE_PREFIX: prefix,
        APPLIANCE_VM_ID: appliance,
        NBD_MANAGE_SERVER: 'false',
        NBD_EXPORTS_DIR: path.join(dir, 'exports'),
      }),
    );
    const control = spawnMain(
      'src/worker/control-main.ts',
      env({
        TASK_QUEUE_PREFIX: prefix,
        DB_NAME: db.name,
        CLOUDSTACK_API_KEY: 'unused-here',
        CLOUDSTACK_SECRET_KEY: 'unused-here',
      }),
    );
    const bad = spawnMain(
      'src/worker/host-main.ts',
      env({
        TASK_QUEUE_PREFIX: prefix,
        APPLIANCE_VM_ID: randomUUID(),
        NBD_MANAGE_SERVER: 'false',
        TEMPORAL_TLS_CERT_FILE: pki.otherClientCert,
        TEMPORAL_TLS_KEY_FILE: pki.otherClientKey,
      }),
    );

    const badExit = await bad.exited;
    assert.notEqual(badExit, 0, 'the worker with a foreign certificate exits non-zero');
    assert.match(bad.output.join('\n'), /refused our client certificate \(TEMPORAL_TLS_CERT_FILE\)/);

    await host.waitForLog('host worker ready', 60_000);
    const hostPollers = await pollFor(
      'host queue poller',
      () => pollers(`${prefix}-host-${appliance}`, 2),
      30_000,
    );
    assert.match(String(hostPollers[0]?.identity), /volume-lifecycle\//, 'identity names the version');
    assert.ok(hostPollers[0]?.deploymentOptions?.buildId, 'the host worker reports its build id');

    await control.waitForLog('control worker ready', 110_000);
    await pollFor('control workflow poller', () => pollers(`${prefix}-control`, 1), 30_000);
    await pollFor('control activity poller', () => pollers(`${prefix}-control`, 2), 30_000);

    // SDK log lines reach the journal as JSON too (Runtime logger → pino).
    assert.ok(
      host.logs.some((l) => l.component === 'temporal-sdk'),
      `the SDK logs through pino\n${host.output.join('\n')}`,
    );
    assert.equal(await host.stop(), 0, `clean exit on SIGTERM\n${host.output.join('\n')}`);
    assert.equal(await control.stop(), 0, `clean exit on SIGTERM\n${control.output.join('\n')}`);
  });
});
