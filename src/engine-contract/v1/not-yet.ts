import type { HTTPMethods } from 'fastify';
import type { z } from 'zod';
import { ApiError } from '../../api/errors.js';
import { oldError } from './contract.js';
import type { V1Scope } from './index.js';

/**
 * Old-daemon routes not served yet: each answers 501 with what is missing and what to do
 * instead — never a made-up success the engine would act on. Where the old daemon defined a
 * request body it is validated first (400 naming the field), so filling a route in is
 * replacing its `instead` with a handler.
 */
export interface NotYet {
  method: HTTPMethods;
  url: string;
  what: string;
  instead: string;
  body?: z.ZodType;
}

export const NOT_YET: NotYet[] = [
  {
    method: 'GET',
    url: '/volumes/:id',
    what: 'the volume status view',
    instead: 'GET /api/v1/volumes/{id}/device, or GET /api/v2/volumes/{id}',
  },
  {
    method: 'GET',
    url: '/devices/:path/volume',
    what: 'looking a volume up by device path',
    instead: 'GET /api/v2/devices/{path}/volume',
  },
  { method: 'GET', url: '/operations', what: 'listing operations', instead: 'GET /api/v2/operations' },
  {
    method: 'POST',
    url: '/exports',
    what: 'creating NBD exports by hand',
    instead: 'attach the volume: every attach ensures its export (migration-vol-<name>)',
  },
  {
    method: 'DELETE',
    url: '/exports/:volume_id',
    what: 'removing NBD exports by hand',
    instead:
      'delete the volume (its export goes with it); reconciliation removes exports no volume accounts for',
  },
  {
    method: 'POST',
    url: '/exports/validate',
    what: 'export validation on /api/v1',
    instead: 'POST /api/v2/exports/validate (bearer token)',
  },
  ...['POST /exports/cleanup', 'GET /exports/orphaned/count', 'POST /exports/cleanup/age'].map((r) => {
    const [method, url] = r.split(' ') as [HTTPMethods, string];
    return {
      method,
      url,
      what: 'export clean-up on /api/v1',
      instead:
        'reconciliation removes orphaned exports on its schedule; "volumectl reconcile --dry-run" lists them, ' +
        'POST /api/v2/admin/force-sync (bearer token) runs it now',
    };
  }),
  {
    method: 'POST',
    url: '/admin/force-sync',
    what: 'force-sync on /api/v1',
    instead: 'POST /api/v2/admin/force-sync (bearer token), or "volumectl reconcile"',
  },
  {
    method: 'GET',
    url: '/metrics',
    what: 'metrics on /api/v1',
    instead: 'GET /api/v2/metrics (Prometheus text)',
  },
];

export function registerNotYetRoutes({ api, guard }: V1Scope): void {
  for (const r of NOT_YET) {
    const mutation = r.method !== 'GET';
    api.route({
      method: r.method,
      url: r.url,
      ...(mutation ? { onRequest: guard } : {}),
      schema: {
        ...(r.body ? { body: r.body } : {}),
        response: { 400: oldError, 401: oldError, 501: oldError },
      },
      handler: async () => {
        throw new ApiError(501, 'not_implemented', `${r.what} is not supported yet: ${r.instead}`);
      },
    });
  }
}
