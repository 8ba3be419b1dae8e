import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Typed search attributes, kept current by the workflows so an operator can find any operation
 * in the Temporal UI, e.g. `OperationType = "attach" AND SagaStep = "correlate"` or
 * `NeedsAttention = true`. The dev server registers them at start (scripts/lib/common.sh).
 */
export const SA = {
  VolumeId: defineSearchAttributeKey('VolumeId', SearchAttributeType.KEYWORD),
  ApplianceVmId: defineSearchAttributeKey('ApplianceVmId', SearchAttributeType.KEYWORD),
  VmName: defineSearchAttributeKey('VmName', SearchAttributeType.KEYWORD),
  PersistentName: defineSearchAttributeKey('PersistentName', SearchAttributeType.KEYWORD),
  OperationType: defineSearchAttributeKey('OperationType', SearchAttributeType.KEYWORD),
  SagaStep: defineSearchAttributeKey('SagaStep', SearchAttributeType.KEYWORD),
  NeedsAttention: defineSearchAttributeKey('NeedsAttention', SearchAttributeType.BOOL),
} as const;

/** Name → type, for registering them on a server (tests, operator service). */
export const SEARCH_ATTRIBUTE_TYPES: Record<keyof typeof SA, 'Keyword' | 'Bool'> = {
  VolumeId: 'Keyword',
  ApplianceVmId: 'Keyword',
  VmName: 'Keyword',
  PersistentName: 'Keyword',
  OperationType: 'Keyword',
  SagaStep: 'Keyword',
  NeedsAttention: 'Bool',
};
