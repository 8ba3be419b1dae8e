import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CloudStackNotFoundError } from '../../src/cloudstack/errors.js';
import {
  DiskAlreadyMappedError,
  MappingMismatchError,
  NameCollisionError,
  NameUnknownError,
} from '../../src/db/mappings.js';
import { FAILURE_TYPES, NON_RETRYABLE_TYPES, REFUSAL_TYPES } from '../../src/domain/failures.js';
import { isAuditStepName, OPERATOR_ACTIONS, STEP_NAMES, undoStepName } from '../../src/domain/steps.js';
import { EngineRowConflictError } from '../../src/engine-contract/engine-rows.js';

// One vocabulary: the failure types and step names are lists in src/domain, and what the sagas,
// the audit trail and the error classes say is drawn from them.

test('the errors that refuse or stop a saga carry a failure type of the list as their name', () => {
  const vm = { sourceVmName: 'pgtest3', diskIndex: 0 };
  const errors = [
    new CloudStackNotFoundError('v'),
    new EngineRowConflictError('m'),
    new DiskAlreadyMappedError('pgtest3', 0, 'w'),
    new NameCollisionError('pgtest3disk0', vm, { volumeId: 'w', ...vm }),
    new MappingMismatchError('v', { ...vm, persistentName: 'pgtest3disk0' }, { ...vm, diskIndex: 1 }),
    new NameUnknownError('v', undefined),
  ];
  for (const e of errors) assert.ok(e.name in FAILURE_TYPES, `${e.constructor.name}: "${e.name}"`);
});

test('a refusal is never retried, and every type the list marks so is in the retry policy', () => {
  for (const t of REFUSAL_TYPES) assert.ok(NON_RETRYABLE_TYPES.includes(t as never), t);
  for (const [t, f] of Object.entries(FAILURE_TYPES))
    assert.equal(NON_RETRYABLE_TYPES.includes(t as never), !f.retry, t);
});

test('the audit trail holds the steps, their undos and the operator answers, and nothing else', () => {
  assert.equal(new Set(STEP_NAMES).size, STEP_NAMES.length, 'each step once');
  for (const s of STEP_NAMES) {
    assert.ok(isAuditStepName(s) && isAuditStepName(undoStepName(s)), s);
    // volume_operation_steps.step is VARCHAR(64) (migration 0001).
    assert.ok(undoStepName(s).length <= 64, s);
  }
  for (const a of OPERATOR_ACTIONS) assert.ok(isAuditStepName(`operator:${a}`), a);
  for (const bad of ['x', 'DROP TABLE', 'undo:x', 'undo:undo:validate', 'operator:ignore', ''])
    assert.equal(isAuditStepName(bad), false, JSON.stringify(bad));
});
