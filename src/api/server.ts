import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { runHealthChecks, type ApiDeps } from './deps.js';
import { useProblemWriter, writeV2 } from './errors.js';
import { createGuards } from './trust.js';
import { useJsonBody } from './json-body.js';
import { rootHealth } from '../engine-contract/v1/contract.js';
import { v1Plugin } from '../engine-contract/v1/index.js';
import { v2Plugin } from './v2/index.js';

export type { ApiDeps } from './deps.js';

const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/**
 * The HTTP API, one port, two contracts over one code path (VolumeLifecycleClient):
 * - /api/v2: this project's API (202, bearer token, Idempotency-Key, field-named errors; OpenAPI
 *   at /api/v2/openapi.json) — src/api/v2/;
 * - /api/v1: the old volume daemon's contract, exactly as the migration engine's client uses it
 *   (201, no headers, `{"error": "<text>"}`) — src/engine-contract/v1/;
 * - GET /health at the root: the old daemon's liveness answer, `{status: "healthy", version}`.
 * Who may call what: src/api/trust.ts.
 */
export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    bodyLimit: 64 * 1024,
    logger: false,
    genReqId: () => randomUUID(),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  const version = deps.version ?? PACKAGE_VERSION;
  await app.register(swagger, {
    openapi: {
      info: { title: 'volume-lifecycle /api/v2', version },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
    // The document describes /api/v2; the old contract is described by the old daemon's own.
    transform: (doc) =>
      doc.url.startsWith('/api/v2/') ? jsonSchemaTransform(doc) : { schema: { hide: true }, url: doc.url },
  });
  useProblemWriter(app, writeV2);
  useJsonBody(app, { emptyIsNoBody: false });

  const guards = createGuards(app, {
    token: deps.token,
    listenHost: deps.listenHost,
    v1TrustLoopback: deps.v1TrustLoopback,
  });
  const appliances = new Set(
    [deps.applianceVmId, ...(deps.applianceVmIds ?? [])].map((id) => id.toLowerCase()),
  );

  await app.register(
    v2Plugin({
      deps,
      requireToken: guards.requireToken,
      document: () => app.swagger() as unknown as Record<string, unknown>,
    }),
    { prefix: '/api/v2' },
  );
  await app.register(
    v1Plugin({
      deps,
      guard: guards.requireTokenOrLocal,
      isAppliance: (vmId) => appliances.has(vmId.toLowerCase()),
    }),
    { prefix: '/api/v1' },
  );

  // The engine's HealthCheck: GET /health at the root, 200 when healthy.
  app.get('/health', { schema: { response: { 200: rootHealth, 503: rootHealth } } }, async (_req, reply) => {
    const { ok, checks } = await runHealthChecks(deps);
    const failing = Object.entries(checks)
      .filter(([, c]) => !c.ok)
      .map(([name, c]) => `${name}: ${c.error ?? 'failed'}`);
    return reply.status(ok ? 200 : 503).send({
      status: ok ? 'healthy' : 'unhealthy',
      version,
      timestamp: new Date().toISOString(),
      ...(ok ? {} : { error: failing.join('; ') }),
    });
  });
  return app;
}
