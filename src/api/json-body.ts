import type { FastifyInstance } from 'fastify';
import { ApiError, type FieldIssue } from './errors.js';

/**
 * The one JSON body parser of both API versions. What Node and JSON.parse let through silently is
 * refused here, naming the field: bytes that are not UTF-8 (Node would turn them into U+FFFD and
 * the request would go on with text nobody sent), a lone UTF-16 surrogate (a `\ud800` escape;
 * MySQL cannot store it), and `__proto__` or `constructor.prototype` keys (prototype
 * poisoning, refused as what they are, not as "not valid JSON").
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const strict = new TextDecoder('utf-8', { fatal: true });
const lenient = new TextDecoder('utf-8');

/** Every string in `value` (keys included) with its field path, depth first. */
function* strings(value: unknown, path: string): Generator<[string, string]> {
  if (typeof value === 'string') yield [path || '(body)', value];
  else if (Array.isArray(value)) for (const [i, v] of value.entries()) yield* strings(v, `${path}.${i}`);
  else if (value !== null && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) {
      const at = path ? `${path}.${k}` : k;
      yield [at, k];
      yield* strings(v, at);
    }
}

const refuse = (message: string, fields: FieldIssue[]) =>
  new ApiError(400, 'invalid_request', message, fields);

function poisonedKeys(value: unknown, path = ''): FieldIssue[] {
  if (value === null || typeof value !== 'object') return [];
  const out: FieldIssue[] = [];
  for (const [k, v] of Object.entries(value)) {
    const at = path ? `${path}.${k}` : k;
    if (k === '__proto__') out.push({ field: at, message: 'the key "__proto__" is not allowed' });
    else if (k === 'constructor' && v !== null && typeof v === 'object' && 'prototype' in v)
      out.push({ field: at, message: 'the key "constructor.prototype" is not allowed' });
    else out.push(...poisonedKeys(v, at));
  }
  return out;
}

/** Parse a request body; `undefined` for an empty one. Throws ApiError 400 naming the field. */
export function parseJsonBody(raw: Buffer): unknown {
  let text: string;
  try {
    text = strict.decode(raw);
  } catch {
    // Say where: the strings that came out with replacement characters.
    let where: FieldIssue[] = [{ field: '(body)', message: 'is not valid UTF-8' }];
    try {
      const loose = JSON.parse(lenient.decode(raw)) as unknown;
      const bad = [...strings(loose, '')].filter(([, s]) => s.includes('\uFFFD'));
      if (bad.length)
        where = bad.map(([field]) => ({ field, message: 'contains bytes that are not valid UTF-8' }));
    } catch {
      // Not JSON either: the body as a whole.
    }
    throw refuse(`invalid request: ${where.map((w) => `${w.field}: ${w.message}`).join('; ')}`, where);
  }
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'malformed_body', `body is not valid JSON: ${(err as Error).message}`, [
      { field: '(body)', message: 'not valid JSON' },
    ]);
  }
  const poisoned = poisonedKeys(value);
  if (poisoned.length)
    throw refuse(`invalid request: ${poisoned.map((p) => `${p.field}: ${p.message}`).join('; ')}`, poisoned);
  const surrogates = [...strings(value, '')].filter(([, s]) => LONE_SURROGATE.test(s));
  if (surrogates.length)
    throw refuse(
      'invalid request: text with a lone UTF-16 surrogate (U+D800–U+DFFF) is not valid Unicode',
      surrogates.map(([field]) => ({ field, message: 'must not contain a lone UTF-16 surrogate' })),
    );
  return value;
}

/**
 * Install it for `application/json` on a scope. `emptyIsNoBody`: an empty body is no body (the
 * old contract's detach and delete, from clients that still send the header); otherwise an
 * empty body is refused as not JSON, as before.
 */
export function useJsonBody(scope: FastifyInstance, opts: { emptyIsNoBody: boolean }): void {
  scope.removeContentTypeParser('application/json');
  scope.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => {
    try {
      const value = parseJsonBody(body as Buffer);
      if (value === undefined && !opts.emptyIsNoBody)
        throw new ApiError(400, 'malformed_body', 'body is empty: send a JSON object', [
          { field: '(body)', message: 'not valid JSON' },
        ]);
      done(null, value);
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}
