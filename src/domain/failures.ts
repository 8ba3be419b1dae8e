/**
 * The failure types the sagas decide on, defined once: which ones retrying cannot fix (the
 * activities' retry policies), and which mean "no" from a check before anything changed (audited
 * as `refused`, not `compensated`). The errors that raise them name themselves from this list, so
 * a misspelt type does not compile. Dependency-free: the workflow bundle uses it.
 */
export const FAILURE_TYPES = {
  /** An input failed its schema (activities/failures.ts turns ZodErrors into it). */
  InvalidInput: { retry: false, refusal: true },
  VolumeNotFound: { retry: false, refusal: true },
  VolumeAttachedElsewhere: { retry: false, refusal: true },
  DiskAlreadyMapped: { retry: false, refusal: true },
  NameCollision: { retry: false, refusal: true },
  MappingMismatch: { retry: false, refusal: true },
  NameUnknown: { retry: false, refusal: true },
  /** Someone else wrote the mapping since it was read (compare-and-swap). */
  StaleMapping: { retry: false, refusal: false },
  /** No device carries the volume's serial: reported, never guessed. */
  DeviceMissing: { retry: false, refusal: false },
  /** The engine's database refused a row (a key or a foreign key): retrying cannot change it. */
  EngineRowConflict: { retry: false, refusal: false },
} as const satisfies Record<string, { retry: boolean; refusal: boolean }>;

export type FailureType = keyof typeof FAILURE_TYPES;

const typesWhere = (test: (f: { retry: boolean; refusal: boolean }) => boolean) =>
  (Object.keys(FAILURE_TYPES) as FailureType[]).filter((t) => test(FAILURE_TYPES[t]));

/** What the activities' retry policies never retry. */
export const NON_RETRYABLE_TYPES: readonly FailureType[] = typesWhere((f) => !f.retry);
/** What a check answers before the operation changed anything. */
export const REFUSAL_TYPES: ReadonlySet<string> = new Set(typesWhere((f) => f.refusal));
