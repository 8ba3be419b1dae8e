import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IdempotencyMismatchError, InvalidRequestError, VolumeBusyError } from '../client/index.js';

/**
 * One place that decides what an error means (status, stable code, fields at fault); each API
 * version only chooses how to write it: /api/v2 as `{"error": {code, message, fields, …}}`,
 * /api/v1 as the old daemon's `{"error": "<text>", "code", "details"}` (its client decodes
 * `error` as a string).
 */
export interface FieldIssue {
  field: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: FieldIssue[],
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** An error as both versions see it. */
export interface Problem {
  status: number;
  code: string;
  message: string;
  fields: FieldIssue[];
  extra?: Record<string, unknown>;
}

type RawError = Error & Partial<Pick<FastifyError, 'statusCode' | 'code' | 'validation'>>;

/** The field a schema validation issue names (zod path first, then the JSON pointer). */
function validationField(v: {
  instancePath?: string;
  params?: { issue?: { path?: (string | number)[] } };
}): string {
  return (
    (v.params?.issue?.path ?? []).join('.') ||
    (v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.') ||
    '(body)'
  );
}

export function toProblem(err: RawError): Problem {
  if (err instanceof ApiError)
    return {
      status: err.status,
      code: err.code,
      message: err.message,
      fields: err.fields ?? [],
      ...(err.extra ? { extra: err.extra } : {}),
    };
  if (err instanceof InvalidRequestError)
    return { status: 400, code: 'invalid_request', message: err.message, fields: err.issues };
  if (err instanceof IdempotencyMismatchError)
    return { status: 409, code: 'idempotency_mismatch', message: err.message, fields: err.issues };
  if (err instanceof VolumeBusyError)
    return {
      status: 409,
      code: 'volume_busy',
      message: err.message,
      fields: [],
      extra: { running_operation: err.running },
    };
  if (err.validation) {
    const issues = (err.validation as Parameters<typeof validationField>[0][]).map((v) => ({
      field: validationField(v),
      message: (v as { message?: string }).message ?? 'invalid',
    }));
    return { status: 400, code: 'invalid_request', message: 'invalid request', fields: issues };
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return { status: 413, code: 'body_too_large', message: 'request body over 64 KiB', fields: [] };
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.statusCode === 415)
    return { status: 415, code: 'unsupported_media_type', message: err.message, fields: [] };
  if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.name === 'SyntaxError' || err.statusCode === 400)
    return {
      status: 400,
      code: 'malformed_body',
      message: err.message,
      fields: [{ field: '(body)', message: 'not valid JSON' }],
    };
  return { status: 500, code: 'internal', message: err.message, fields: [] };
}

export const notFound = (req: FastifyRequest): Problem => ({
  status: 404,
  code: 'not_found',
  message: `no route ${req.method} ${(req.url.split('?')[0] ?? '').slice(0, 200)}`,
  fields: [],
});

export type ProblemWriter = (reply: FastifyReply, p: Problem) => FastifyReply;

/** /api/v2 (and anything outside /api/v1): the error object, unchanged from the first API. */
export const writeV2: ProblemWriter = (reply, p) =>
  reply
    .status(p.status)
    .send({ error: { code: p.code, message: p.message, fields: p.fields, ...(p.extra ?? {}) } });

/**
 * /api/v1: `error` is one sentence a log line can carry (the engine prints it as is), naming the
 * fields at fault in the old contract's own spelling.
 */
export function writeV1(rename: Record<string, string>): ProblemWriter {
  return (reply, p) => {
    const fields = p.fields.map((f) => ({ field: rename[f.field] ?? f.field, message: f.message }));
    const text =
      p.code === 'invalid_request' && fields.length
        ? `invalid request: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`
        : p.message;
    return reply.status(p.status).send({
      error: text,
      code: p.code,
      details: { fields, ...(p.extra ?? {}) },
    });
  };
}

/** Install a version's error and not-found writers on its (encapsulated) scope. */
export function useProblemWriter(scope: FastifyInstance, write: ProblemWriter): void {
  scope.setErrorHandler((err: RawError, _req, reply) => write(reply, toProblem(err)));
  scope.setNotFoundHandler((req, reply) => write(reply, notFound(req)));
}
