import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { OperatorAction, SagaProgress, VmOperationProgress } from '../src/domain/operations.js';

/**
 * The messages every saga answers, defined once: the workflows set handlers for these
 * definitions and the client sends them by the same definitions, so a rename on one side alone
 * fails the type-check instead of a call in production.
 */
export const progressQuery = defineQuery<SagaProgress>('progress');
/** Operator's hand on a running operation: abort it (compensates), or answer a stuck compensation. */
export const operatorUpdate = defineUpdate<string, [OperatorAction]>('operator');
/** A whole-VM operation's view: each volume's state. */
export const vmProgressQuery = defineQuery<VmOperationProgress>('vmProgress');
