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
  CloudStackVmNotFoundError,
  isRetryable,
  parameterOf,
} from '../../src/cloudstack/errors.js';

// Codes and their meaning: CloudStack's ApiErrorCode (HTTP status = errorcode).
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

test('the refused parameter is read from CloudStack’s texts, and the message names it', () => {
  // Texts as ParamProcessWorker, ApiServer.checkCharacterInkParams and VolumeApiServiceImpl write them.
  const cases: [string, string | undefined][] = [
    ['Unable to execute API command deletevolume due to missing parameter id', 'id'],
    [
      'Unable to execute API command listvirtualmachines due to invalid value. Invalid parameter id value=00000000-aaaa-bbbb-cccc-000000000000 due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.',
      'id',
    ],
    ['Unable to execute API command createvolume due to invalid value 1.5 for parameter size', 'size'],
    ['Received value containing illegal ASCII non-printable characters for parameter name', 'name'],
    // Older releases quoted the value (which may itself hold a newline).
    [
      'Received value a\nb\tc for parameter name is invalid, contains illegal ASCII non-printable characters',
      'name',
    ],
    ['Volume size: 1025 GB is out of allowed range. Min: 1. Max: 1024', 'size'],
    ['Volume size: 2000GB is out of allowed range. Max: 1024 Min:1', 'size'], // older wording
    ['Disk size must be larger than 0', 'size'],
    ['This disk offering requires a custom size specified', 'size'],
    ['Please specify a volume that is not attached to any VM.', undefined],
  ];
  for (const [text, parameter] of cases) assert.equal(parameterOf(text), parameter, text);

  const e = new CloudStackError(
    'createVolume',
    431,
    'Received value containing illegal ASCII non-printable characters for parameter name',
    9999,
  );
  assert.equal(e.parameter, 'name');
  assert.equal(e.retryable, false);
  assert.equal(e.notFound, false);
  assert.match(e.message, /for parameter name \(parameter name\)$/);
  // Only parameter errors (431) name a parameter.
  const other = new CloudStackError('createVolume', 530, 'Disk size must be larger than 0');
  assert.equal(other.parameter, undefined);
  assert.doesNotMatch(other.message, /\(parameter/);
  // Plain enumerable fields, so an activity failure's details carry it.
  assert.equal(Object.entries(e).find(([k]) => k === 'parameter')?.[1], 'name');
});

test('an unknown VM is a final VirtualMachineNotFound naming the id', () => {
  const e = new CloudStackVmNotFoundError('vm-1');
  assert.equal(e.retryable, false);
  assert.equal(isRetryable(e), false);
  assert.equal(e.name, 'VirtualMachineNotFound');
  assert.equal(e.message, 'virtual machine vm-1 does not exist in CloudStack');
});
