import { z } from 'zod';

/**
 * An activity is declared once: the schema of its argument, the argument's type derived from
 * that schema (`z.input`), and the function that gets it. Its kind (where it runs) is in
 * activities/control/kinds.ts, which the workflow bundle reads and which must not import this.
 *
 * Inputs are checked on entry, so a refusal (a ZodError, which activities/failures.ts turns into
 * a non-retryable InvalidInput) names the field and nothing has been called or written yet.
 * Checks only: the function goes on with exactly the value it was given, never the parsed copy
 * (the UUID schema lower-cases, for one), so checking changes nothing an activity does.
 */
export function activity<S extends z.ZodType, R>(
  schema: S,
  fn: (input: z.input<S>) => Promise<R>,
): (input: z.input<S>) => Promise<R> {
  return async (input) => {
    schema.parse(input);
    return fn(input);
  };
}

/**
 * An activity whose one argument is a bare value (`csGetVolume(volumeId)`): workflows call it so,
 * and recorded histories replay against that shape. The value is checked as `{ [field]: value }`,
 * so a refusal names it (`volumeId`), as it names a field of an argument object.
 */
export function positional<S extends z.ZodType, R>(
  field: string,
  schema: S,
  fn: (value: z.input<S>) => Promise<R>,
): (value: z.input<S>) => Promise<R> {
  const named = z.object({ [field]: schema });
  return async (value) => {
    named.parse({ [field]: value });
    return fn(value);
  };
}

/**
 * `schema`, typed as `T` on input: for an argument whose type is declared with the code it is
 * handed to (a mapping row, an audit record, a dm table) and of which `schema` checks a part, or
 * whose schema is declared without its input type. The compiler refuses a `T` that `schema`
 * would not accept as it stands (a check of a field `T` does not have, or of another type).
 */
export function typed<T>() {
  return <S extends z.ZodType>(schema: S & ([T] extends [z.input<S>] ? unknown : never)) =>
    z.custom<T>().pipe(schema as unknown as z.ZodType<z.output<S>, T>);
}

/** A field passed on as given and not checked (nothing checks it today), typed `T`. */
export const unchecked = <T>() => z.custom<T>();
