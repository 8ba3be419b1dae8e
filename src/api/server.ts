import { randomUUID, timingSafeEqual } from 'node:crypto';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Pool } from 'mysql2/promise';
import { z } from 'zod';
import {
  InvalidRequestError,
  VolumeBusyError,
  type OperationHandle,
  type VolumeLifecycleClient,
} from '../client/index.js';
import { getExport, listExports } from '../db/exports.js';
import { getMapping, listMappings, type MappingRecord } from '../db/mappings.js';
import { listOperations, listSteps } from '../db/operations.js';
import { uuid } from '../domain/ids.js';
import type { ServedExport } from '../nbd/types.js';
import { pendingOperation, toApiOperation } from './operations.js';

/**
 * The HTTP API: a drop-in for the old volume daemon's /api/v1 (same paths, verbs and operation
 * fields), backed by the sagas. Mutating routes need the bearer token; errors are JSON with a
 * stable `code` and the `fields` at fault; 409 names the operation running on the volume.
 */
export interface ApiDeps {
  volumes: VolumeLifecycleClient;
  db: Pool;
  applianceVmId: string;
  token: string;
  /** The NBD server's export list over the protocol (for /exports/validate). */
  servedExports?: () => Promise<ServedExport[]>;
  /** Start a reconcile pass now (for /admin/force-sync and /exports/cleanup). */
  startReconcile?: (dryRun: boolean) => Promise<{ workflowId: string; runId: string }>;
  health?: Record<string, () => Promise<unknown>>;
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: { field: string; message: string }[],
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
  }
}

const volumeParams = z.object({ id: uuid });
const operationIdBody = { operation_id: uuid.optional() };

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    bodyLimit: 64 * 1024,
    logger: false,
    genReqId: () => randomUUID(),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(swagger, {
    openapi: {
      info: { title: 'volume-lifecycle', version: '1.0.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
    transform: jsonSchemaTransform,
  });

  app.setErrorHandler(
    (err: Error & { statusCode?: number; code?: string; validation?: unknown[] }, _req, reply) => {
      if (err instanceof ApiError) {
        return reply
          .status(err.status)
          .send({ error: { code: err.code, message: err.message, fields: err.fields ?? [], ...err.extra } });
      }
      if (err instanceof InvalidRequestError) {
        return reply
          .status(400)
          .send({ error: { code: 'invalid_request', message: err.message, fields: err.issues } });
      }
      if (err instanceof VolumeBusyError) {
        return reply.status(409).send({
          error: { code: 'volume_busy', message: err.message, fields: [], running_operation: err.running },
        });
      }
      if (err.validation) {
        const issues = (
          (
            err as unknown as {
              validation: {
                instancePath?: string;
                params?: { issue?: { path?: (string | number)[] } };
                message?: string;
              }[];
            }
          ).validation ?? []
        ).map((v) => ({
          field:
            (v.params?.issue?.path ?? []).join('.') ||
            (v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.') ||
            '(body)',
          message: v.message ?? 'invalid',
        }));
        return reply
          .status(400)
          .send({ error: { code: 'invalid_request', message: 'invalid request', fields: issues } });
      }
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        return reply
          .status(413)
          .send({ error: { code: 'body_too_large', message: 'request body over 64 KiB', fields: [] } });
      }
      if (
        err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
        err.name === 'SyntaxError' ||
        err.statusCode === 400
      ) {
        return reply.status(400).send({
          error: {
            code: 'malformed_body',
            message: err.message,
            fields: [{ field: '(body)', message: 'not valid JSON' }],
          },
        });
      }
      if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.statusCode === 415) {
        return reply
          .status(415)
          .send({ error: { code: 'unsupported_media_type', message: err.message, fields: [] } });
      }
      return reply.status(500).send({ error: { code: 'internal', message: err.message, fields: [] } });
    },
  );

  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({
      error: {
        code: 'not_found',
        message: `no route ${req.method} ${(req.url.split('?')[0] ?? '').slice(0, 200)}`,
        fields: [],
      },
    }),
  );

  const expected = Buffer.from(`Bearer ${deps.token}`);
  const requireToken = async (req: FastifyRequest) => {
    const got = Buffer.from(req.headers.authorization ?? '');
    if (!deps.token || got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw new ApiError(401, 'unauthorized', 'a valid bearer token is required for this route', [
        { field: 'Authorization', message: 'missing or wrong bearer token' },
      ]);
    }
  };
  const mutating = { preHandler: requireToken };

  const accepted = async (
    reply: FastifyReply,
    type: string,
    vmId: string | null,
    body: unknown,
    h: Promise<OperationHandle>,
  ) => {
    const handle = await h;
    const rows = await listOperations(deps.db, { operationId: handle.operationId });
    return reply.status(202).send(
      rows[0]
        ? toApiOperation(rows[0])
        : pendingOperation({
            id: handle.operationId,
            type,
            volumeId: handle.volumeId,
            vmId,
            request: body,
            workflowId: handle.workflowId,
            runId: handle.runId,
          }),
    );
  };
  const idem = (req: FastifyRequest, body: { operation_id?: string }) =>
    body.operation_id ??
    (typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined);

  const v1 = async (r: FastifyInstance) => {
    const api = r.withTypeProvider<ZodTypeProvider>();
    api.post(
      '/volumes/:id/attach',
      {
        ...mutating,
        schema: {
          params: volumeParams,
          body: z.object({
            vm_id: uuid.optional(),
            source_vm_name: z.string(),
            disk_key: z.union([z.number(), z.string()]),
            ...operationIdBody,
          }),
        },
      },
      (req, reply) =>
        accepted(
          reply,
          'attach',
          req.body.vm_id ?? deps.applianceVmId,
          req.body,
          deps.volumes.attach({
            operationId: idem(req, req.body),
            volumeId: req.params.id,
            applianceVmId: req.body.vm_id ?? deps.applianceVmId,
            sourceVmName: req.body.source_vm_name,
            diskKey: req.body.disk_key,
          }),
        ),
    );
    api.post(
      '/volumes/:id/detach',
      { ...mutating, schema: { params: volumeParams, body: z.object(operationIdBody).default({}) } },
      (req, reply) =>
        accepted(
          reply,
          'detach',
          deps.applianceVmId,
          req.body,
          deps.volumes.detach({
            operationId: idem(req, req.body),
            volumeId: req.params.id,
            applianceVmId: deps.applianceVmId,
          }),
        ),
    );
    api.post(
      '/volumes/:id/failover',
      { ...mutating, schema: { params: volumeParams, body: z.object({ vm_id: uuid, ...operationIdBody }) } },
      (req, reply) =>
        accepted(
          reply,
          'failover',
          req.body.vm_id,
          req.body,
          deps.volumes.failover({
            operationId: idem(req, req.body),
            volumeId: req.params.id,
            applianceVmId: deps.applianceVmId,
            targetVmId: req.body.vm_id,
          }),
        ),
    );
    api.post(
      '/volumes/:id/failback',
      { ...mutating, schema: { params: volumeParams, body: z.object(operationIdBody).default({}) } },
      (req, reply) =>
        accepted(
          reply,
          'failback',
          deps.applianceVmId,
          req.body,
          deps.volumes.failback({
            operationId: idem(req, req.body),
            volumeId: req.params.id,
            applianceVmId: deps.applianceVmId,
          }),
        ),
    );
    api.delete('/volumes/:id', { ...mutating, schema: { params: volumeParams } }, (req, reply) =>
      accepted(
        reply,
        'delete',
        null,
        {},
        deps.volumes.delete({
          operationId: idem(req, {}),
          volumeId: req.params.id,
          applianceVmId: deps.applianceVmId,
        }),
      ),
    );
    // Routes the old daemon kept for its own workarounds: gone, with the reason.
    for (const [path, why] of [
      [
        '/volumes/:id/attach-root',
        'root volumes are never attached to the appliance; the sagas handle data volumes only',
      ],
      [
        '/exports/cleanup-by-age',
        'exports are reconciled against the database by the reconcile Schedule; nothing is removed by age',
      ],
      ['/test-failover/cleanup', 'failover is a saga with compensation; there is no test residue to clean'],
    ] as const) {
      api.post(path, async () => {
        throw new ApiError(410, 'gone', why);
      });
    }

    const mappingJson = (m: MappingRecord) => ({
      volume_id: m.volumeId,
      persistent_device_name: m.persistentName,
      mapper_path: m.mapperPath,
      device_path: m.devicePath,
      virtio_serial: m.virtioSerial,
      location: m.location,
      target_vm_id: m.targetVmId,
      dm_state: m.dmState,
      source_vm_name: m.sourceVmName,
      disk_index: m.diskIndex,
      size_bytes: m.sizeBytes,
      appliance_vm_id: m.applianceVmId,
      version: m.version,
    });
    const mappingOr404 = async (id: string) => {
      const m = await getMapping(deps.db, id);
      if (!m)
        throw new ApiError(404, 'not_found', `volume ${id} has no device mapping`, [
          { field: 'id', message: 'unknown volume' },
        ]);
      return m;
    };
    api.get('/volumes/:id', { schema: { params: volumeParams } }, async (req) => {
      const m = await mappingOr404(req.params.id);
      const last = await deps.volumes.latest(req.params.id);
      return {
        ...mappingJson(m),
        export: (await getExport(deps.db, m.volumeId)) ?? null,
        latest_operation_id: last?.operationId ?? null,
      };
    });
    api.get('/volumes/:id/device', { schema: { params: volumeParams } }, async (req) =>
      mappingJson(await mappingOr404(req.params.id)),
    );
    api.get(
      '/devices/:path/volume',
      {
        schema: {
          params: z.object({
            path: z.string().regex(/^\/dev\/[a-z0-9]+$/, 'must be a device path like /dev/vdb'),
          }),
        },
      },
      async (req) => {
        const [m] = await listMappings(deps.db, { devicePath: req.params.path });
        if (!m)
          throw new ApiError(404, 'not_found', `no volume on ${req.params.path}`, [
            { field: 'path', message: 'no mapping' },
          ]);
        return mappingJson(m);
      },
    );
    api.get('/vms/:id/volumes', { schema: { params: volumeParams } }, async (req) => {
      const rows =
        req.params.id === deps.applianceVmId
          ? await listMappings(deps.db, { applianceVmId: req.params.id })
          : await listMappings(deps.db, { targetVmId: req.params.id });
      return { volumes: rows.map(mappingJson) };
    });

    api.get('/operations/:id', { schema: { params: z.object({ id: uuid }) } }, async (req) => {
      const [o] = await listOperations(deps.db, { operationId: req.params.id });
      if (!o)
        throw new ApiError(404, 'not_found', `operation ${req.params.id} not found`, [
          { field: 'id', message: 'unknown operation' },
        ]);
      return { ...toApiOperation(o), steps: await listSteps(deps.db, o.operationId) };
    });
    api.get(
      '/operations',
      {
        schema: {
          querystring: z.object({
            type: z.enum(['attach', 'detach', 'failover', 'failback', 'delete', 'repair']).optional(),
            status: z
              .enum(['running', 'completed', 'failed', 'compensated', 'needs_attention', 'cancelled'])
              .optional(),
            volume_id: uuid.optional(),
            vm_id: uuid.optional(),
            since: z.coerce.date().optional(),
            until: z.coerce.date().optional(),
            limit: z.coerce.number().int().min(1).max(1000).default(100),
          }),
        },
      },
      async (req) => {
        const q = req.query;
        const rows = await listOperations(deps.db, {
          type: q.type,
          status: q.status,
          volumeId: q.volume_id,
          vmId: q.vm_id,
          since: q.since,
          until: q.until,
          limit: q.limit,
        });
        return { operations: rows.map(toApiOperation) };
      },
    );

    api.get('/exports', async () => ({ exports: await listExports(deps.db) }));
    api.get('/exports/:volume_id', { schema: { params: z.object({ volume_id: uuid }) } }, async (req) => {
      const e = await getExport(deps.db, req.params.volume_id);
      if (!e)
        throw new ApiError(404, 'not_found', `volume ${req.params.volume_id} has no export`, [
          { field: 'volume_id', message: 'no export' },
        ]);
      return e;
    });
    api.post('/exports/validate', mutating, async () => {
      if (!deps.servedExports)
        throw new ApiError(503, 'not_configured', 'the NBD server is not reachable from this API');
      const served = new Set((await deps.servedExports()).map((e) => e.exportName));
      const recorded = new Set((await listExports(deps.db)).map((e) => e.exportName));
      return {
        in_sync: [...recorded].every((n) => served.has(n)) && [...served].every((n) => recorded.has(n)),
        missing_from_server: [...recorded].filter((n) => !served.has(n)).sort(),
        unknown_to_database: [...served].filter((n) => !recorded.has(n)).sort(),
      };
    });
    const reconcile = (dryRun: boolean) => async (_req: FastifyRequest, reply: FastifyReply) => {
      if (!deps.startReconcile) throw new ApiError(503, 'not_configured', 'reconciliation is not configured');
      return reply.status(202).send({ reconcile: await deps.startReconcile(dryRun) });
    };
    api.post('/exports/cleanup', mutating, reconcile(false));
    api.post('/admin/force-sync', mutating, reconcile(false));
    api.get('/health', async (_req, reply) => {
      const checks: Record<string, { ok: boolean; error?: string }> = {};
      for (const [name, probe] of Object.entries({
        database: () => deps.db.query('SELECT 1'),
        ...(deps.health ?? {}),
      })) {
        try {
          await probe();
          checks[name] = { ok: true };
        } catch (err) {
          checks[name] = { ok: false, error: (err as Error).message };
        }
      }
      const ok = Object.values(checks).every((c) => c.ok);
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', checks });
    });
    api.get('/metrics', async (_req, reply) => {
      if (!deps.metrics) throw new ApiError(503, 'not_configured', 'metrics are not configured');
      const m = await deps.metrics();
      return reply.type(m.contentType).send(m.body);
    });
    api.get('/openapi.json', async () => app.swagger());
  };
  await app.register(v1, { prefix: '/api/v1' });
  return app;
}
