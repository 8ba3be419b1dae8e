import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/index.js';

test('defaults apply on an empty environment', () => {
  const c = loadConfig({});
  assert.equal(c.DB_PORT, 3306);
  assert.equal(c.API_HOST, '127.0.0.1');
  assert.equal(c.EXPORT_BACKEND, 'nbdkit-dir');
});

test('a bad value stops with a message naming the variable', () => {
  assert.throws(
    () => loadConfig({ DB_PORT: 'seventy', EXPORT_BACKEND: 'nbd-serverz' }),
    (e: unknown) => e instanceof ConfigError && /DB_PORT/.test(e.message) && /EXPORT_BACKEND/.test(e.message),
  );
  assert.throws(() => loadConfig({ DB_NAME: 'x; DROP DATABASE y' }), /DB_NAME/);
  assert.throws(() => loadConfig({ TASK_QUEUE_PREFIX: 'Bad Prefix' }), /TASK_QUEUE_PREFIX/);
});

test('WORKER_METRICS_ADDRESS is an IP address and port, or absent', () => {
  assert.equal(loadConfig({}).WORKER_METRICS_ADDRESS, undefined);
  assert.equal(
    loadConfig({ WORKER_METRICS_ADDRESS: '127.0.0.1:9464' }).WORKER_METRICS_ADDRESS,
    '127.0.0.1:9464',
  );
  assert.equal(loadConfig({ WORKER_METRICS_ADDRESS: '0.0.0.0:9464' }).WORKER_METRICS_ADDRESS, '0.0.0.0:9464');
  assert.equal(loadConfig({ WORKER_METRICS_ADDRESS: '[::1]:9464' }).WORKER_METRICS_ADDRESS, '[::1]:9464');
  for (const bad of [
    '9464',
    'localhost:9464',
    '127.0.0.1',
    '127.0.0.1:0',
    '127.0.0.1:70000',
    '::1:9464',
    'http://127.0.0.1:9464',
  ]) {
    assert.throws(
      () => loadConfig({ WORKER_METRICS_ADDRESS: bad }),
      (e: unknown) =>
        e instanceof ConfigError && /WORKER_METRICS_ADDRESS: must be <ip>:<port>/.test(e.message),
      bad,
    );
  }
});
