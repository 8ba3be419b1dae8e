import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CloudStackClient } from '../../src/cloudstack/client.js';
import {
  CloudStackConfigError,
  CloudStackConflictError,
  CloudStackError,
  CloudStackJobTimeoutError,
  CloudStackNetworkError,
  CloudStackNotFoundError,
  isRetryable,
} from '../../src/cloudstack/errors.js';

// Codes and their meaning: shared/reference/cloudstack.md fact 6.
test('errorcode classification: parameter/permission/limit errors are final, the rest retryable', () => {
  const final = [401, 431, 432, 531, 532];
  const retry = [530, 533, 534, 535, 536];
  for (const code of final)
    assert.equal(new CloudStackError('attachVolume', code, 'x').retryable, false, `${code}`);
  for (const code of retry)
    assert.equal(new CloudStackError('attachVolume', code, 'x').retryable, true, `${code}`);
  assert.equal(isRetryable(new CloudStackError('x', 534, 'x')), true);
  assert.equal(isRetryable(new Error('plain')), false, 'unknown errors are not assumed retryable');
});

test('the error carries command, codes, text and whether it came from a job', () => {
  const e = new CloudStackError(
    'deleteVolume',
    431,
    'Please specify a volume that is not attached to any VM.',
    4350,
  );
  assert.equal(e.command, 'deleteVolume');
  assert.equal(e.errorcode, 431);
  assert.equal(e.cserrorcode, 4350);
  assert.equal(e.inJob, false);
  assert.match(e.message, /deleteVolume failed: 431\/4350 Please specify/);
  assert.match(new CloudStackError('attachVolume', 431, 't', undefined, true).message, /in its job/);
});

test('not-found is recognised from the texts CloudStack uses (§2.4, §2.5)', () => {
  const unknown =
    'Unable to execute API command listvolumes due to invalid value. Invalid parameter id value=00000000-aaaa-bbbb-cccc-000000000000 due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.';
  assert.equal(new CloudStackError('listVolumes', 431, unknown, 9999).notFound, true);
  assert.equal(
    new CloudStackError('deleteVolume', 431, 'Unable to find volume with ID: 42', 4350).notFound,
    true,
  );
  assert.equal(
    new CloudStackError('listVolumes', 431, 'Please specify a volume that is not attached to any VM.')
      .notFound,
    false,
  );
  assert.equal(
    new CloudStackError('listVolumes', 530, unknown).notFound,
    false,
    'only a 431 means not found',
  );
});

test('network faults, job timeouts are retryable; conflicts and not-found are not', () => {
  const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
  const n = new CloudStackNetworkError('listVolumes', timeout);
  assert.equal(n.retryable, true);
  assert.equal(n.timedOut, true);
  assert.equal(new CloudStackNetworkError('listVolumes', new TypeError('fetch failed')).timedOut, false);
  assert.equal(new CloudStackJobTimeoutError('attachVolume', 'j', 10).retryable, true);
  const c = new CloudStackConflictError('v', 'vm-a', 'vm-b');
  assert.equal(c.retryable, false);
  assert.match(c.message, /attached to VM vm-a, not vm-b/);
  const nf = new CloudStackNotFoundError('v');
  assert.equal(nf.retryable, false);
  assert.equal(nf.name, 'VolumeNotFound', 'the workflows list this type as non-retryable');
});

test('client config is validated and every bad field is named', () => {
  assert.throws(
    () => new CloudStackClient({ url: 'not a url', apiKey: '', secretKey: 's', requestTimeoutMs: -1 }),
    (e: unknown) => {
      assert.ok(e instanceof CloudStackConfigError);
      assert.deepEqual(e.fields.map((f) => f.field).sort(), ['apiKey', 'requestTimeoutMs', 'url']);
      assert.match(e.message, /url: .*apiKey: is required/s);
      return true;
    },
  );
  assert.throws(
    () => new CloudStackClient({ url: 'ftp://mgmt/client/api', apiKey: 'k', secretKey: 's' }),
    /url: must be an http\(s\) URL of the API/,
  );
  assert.ok(new CloudStackClient({ url: 'http://127.0.0.1:8080/client/api', apiKey: 'k', secretKey: 's' }));
});
