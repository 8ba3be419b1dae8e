import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Typed search attributes, kept current by the workflows so an operator can find any operation
 * in the Temporal UI, e.g. `OperationType = "attach" AND SagaStep = "correlate"` or
 * `NeedsAttention = true`. The dev server registers them at start (scripts/lib/common.sh asks
 * `searchAttributeFlags` for the list).
 */
export const SA = {
  VolumeId: defineSearchAttributeKey('VolumeId', SearchAttributeType.KEYWORD),
  /** The operation's id (its idempotency key), set when it starts: how the tools find any operation. */
  OperationId: defineSearchAttributeKey('OperationId', SearchAttributeType.KEYWORD),
  ApplianceVmId: defineSearchAttributeKey('ApplianceVmId', SearchAttributeType.KEYWORD),
  VmName: defineSearchAttributeKey('VmName', SearchAttributeType.KEYWORD),
  PersistentName: defineSearchAttributeKey('PersistentName', SearchAttributeType.KEYWORD),
  OperationType: defineSearchAttributeKey('OperationType', SearchAttributeType.KEYWORD),
  SagaStep: defineSearchAttributeKey('SagaStep', SearchAttributeType.KEYWORD),
  NeedsAttention: defineSearchAttributeKey('NeedsAttention', SearchAttributeType.BOOL),
} as const;

/** The type names `temporal operator search-attribute create` and `server start-dev` take. */
const CLI_TYPE: Record<string, string> = {
  KEYWORD: 'Keyword',
  BOOL: 'Bool',
  TEXT: 'Text',
  INT: 'Int',
  DOUBLE: 'Double',
  DATETIME: 'Datetime',
  KEYWORD_LIST: 'KeywordList',
};

/** `Name=Type` for each attribute, as the Temporal CLI registers them: derived, never retyped. */
export function searchAttributeFlags(): string[] {
  return Object.values(SA).map((k) => `${k.name}=${CLI_TYPE[k.type] ?? k.type}`);
}
