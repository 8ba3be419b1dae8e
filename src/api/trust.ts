import { timingSafeEqual } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

/**
 * Who may call a mutating route.
 *
 * - /api/v2: always the bearer token (`Authorization: Bearer <API_TOKEN>`).
 * - /api/v1 (the old daemon's contract): the migration engine's client cannot send headers, so a
 *   request WITHOUT an Authorization header is accepted only when both hold: the peer is a
 *   loopback address (127.0.0.0/8, ::1, ::ffff:127.x.x.x — the socket's own address, never a
 *   forwarded-for header) AND the API listens on a loopback address (so no remote host can reach
 *   it at all). Anything else needs the token, like v2. A request that does send an
 *   Authorization header must send the right one, loopback or not. API_V1_TRUST_LOOPBACK=false
 *   turns the exemption off (e.g. when a reverse proxy on this machine forwards remote callers).
 *
 * The check runs in `onRequest`, before the body is parsed or validated, so an unauthenticated
 * caller learns nothing of the schema.
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  if (isIPv4(address)) return address.startsWith('127.');
  if (!isIPv6(address)) return false;
  let canonical: string;
  try {
    // The URL parser writes every IPv6 spelling one way: 0:0:0:0:0:0:0:1 → ::1,
    // ::ffff:127.0.0.1 → ::ffff:7f00:1. Zone ids (fe80::1%eth0) throw: not loopback.
    canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return false;
  }
  if (canonical === '::1') return true;
  const mapped = /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(canonical);
  return mapped !== null && parseInt(mapped[1]!, 16) >> 8 === 127;
}

export interface TrustOptions {
  token: string;
  /** The address the API is configured to listen on (API_HOST); used until it listens. */
  listenHost?: string;
  /** Default true; see the rule above. */
  v1TrustLoopback?: boolean;
}

const unauthorized = (message: string) =>
  new ApiError(401, 'unauthorized', message, [
    { field: 'Authorization', message: 'missing or wrong bearer token' },
  ]);

export function createGuards(app: FastifyInstance, o: TrustOptions) {
  const expected = Buffer.from(`Bearer ${o.token}`);
  const tokenOk = (req: FastifyRequest) => {
    const got = Buffer.from(req.headers.authorization ?? '');
    return o.token !== '' && got.length === expected.length && timingSafeEqual(got, expected);
  };
  /** Where the server really listens once it does; the configured host before (inject). */
  const boundToLoopback = () => {
    const a = app.server.address();
    if (a && typeof a === 'object') return isLoopbackAddress(a.address);
    if (typeof a === 'string') return false; // a unix socket or pipe: no peer address to judge
    return o.listenHost === 'localhost' || isLoopbackAddress(o.listenHost);
  };

  return {
    /** /api/v2 mutations. */
    requireToken: async (req: FastifyRequest) => {
      if (!tokenOk(req)) throw unauthorized('a valid bearer token is required for this route');
    },
    /** /api/v1 mutations: the token, or a tokenless call from this machine to a loopback-only API. */
    requireTokenOrLocal: async (req: FastifyRequest) => {
      if (req.headers.authorization !== undefined) {
        if (!tokenOk(req)) throw unauthorized('wrong bearer token');
        return;
      }
      if ((o.v1TrustLoopback ?? true) && boundToLoopback() && isLoopbackAddress(req.socket.remoteAddress))
        return;
      throw unauthorized(
        'a bearer token is required: calls without one are accepted only from this machine ' +
          'while the API listens on a loopback address',
      );
    },
  };
}
