import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { TlsMaterial } from '../config/production.js';

/**
 * One HTTP/2 handshake with the Temporal frontend, the way gRPC makes it, to say in plain words
 * why a connection fails: the SDKs report a bad certificate as "transport error" or a deadline.
 * Success = the server's HTTP/2 SETTINGS arrived (so TLS, the client certificate and ALPN h2
 * were all accepted). Used before connecting with TLS, and by `volumectl doctor`.
 */
export interface ProbeTarget {
  address: string;
  tls?: TlsMaterial & { serverName?: string | undefined };
  /** The variables to name in advice (defaults: the TEMPORAL_TLS_* names). */
  names?: { ca: string; cert: string; key: string; serverName: string; tls: string };
}

export type ProbeResult = { ok: true } | { ok: false; problem: string };

const TEMPORAL_NAMES = {
  ca: 'TEMPORAL_TLS_CA_FILE',
  cert: 'TEMPORAL_TLS_CERT_FILE',
  key: 'TEMPORAL_TLS_KEY_FILE',
  serverName: 'TEMPORAL_TLS_SERVER_NAME',
  tls: 'TEMPORAL_TLS',
};

/** `host:port` or `[v6]:port` → parts; undefined when it is neither. */
export function splitAddress(address: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

/** Plain words for a handshake failure (OpenSSL codes and alerts as Node reports them). */
export function explainHandshakeError(err: NodeJS.ErrnoException, t: ProbeTarget): string {
  const n = t.names ?? TEMPORAL_NAMES;
  const code = err.code ?? '';
  const text = `${code} ${err.message}`;
  const where = t.address;
  if (code === 'ECONNREFUSED') return `nothing listens at ${where} (connection refused)`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot resolve the host of ${where}`;
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH')
    return `${where} cannot be reached (${code})`;
  if (!t.tls) {
    if (/ECONNRESET|Protocol error|ERR_HTTP2/.test(text))
      return `${where} does not answer plaintext gRPC; if it requires TLS, set ${n.tls}=true (and ${n.ca} for a private CA)`;
    return `${where}: ${err.message}`;
  }
  if (/wrong version number|packet length too long|WRONG_VERSION_NUMBER|http request/i.test(text))
    return `${where} does not speak TLS: point at its TLS port, or unset ${n.tls} and the ${n.ca}/${n.cert} settings`;
  if (
    /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER_CERT/.test(
      code,
    )
  )
    return t.tls.ca
      ? `the server's certificate is not signed by the CA in ${n.ca}: use the CA that issued the server's certificate`
      : `the server's certificate is not signed by a CA this machine trusts: set ${n.ca} to the CA that issued it`;
  if (code === 'CERT_HAS_EXPIRED') return `the server's certificate has expired (renew it on the server)`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `the server's certificate does not name ${splitAddress(where)?.host ?? where} (${err.message}): set ${n.serverName} to a name it carries`;
  if (/certificate required|ALERT_CERTIFICATE_REQUIRED|alert number 116/i.test(text))
    return `the server requires a client certificate: set ${n.cert} and ${n.key}`;
  if (/unknown ca|ALERT_UNKNOWN_CA|alert number 48/i.test(text))
    return `the server refused our client certificate (${n.cert}): it is not signed by a CA the server trusts for clients`;
  if (/bad certificate|ALERT_BAD_CERTIFICATE|alert number 42|certificate unknown|alert number 46/i.test(text))
    return `the server refused our client certificate (${n.cert}) as bad or unknown`;
  if (/certificate expired|alert number 45/i.test(text))
    return `the server says our client certificate (${n.cert}) has expired`;
  if (/handshake failure|alert number 40/i.test(text))
    return `the TLS handshake with ${where} failed (no common protocol version or cipher, or a refused client certificate)`;
  if (code === 'ECONNRESET')
    return `${where} closed the connection during the TLS handshake (a refused client certificate, or not a TLS endpoint)`;
  return `TLS to ${where} failed: ${err.message}${code ? ` (${code})` : ''}`;
}

/** The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.concat([
  Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
  Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
]);

export function probeTemporal(t: ProbeTarget, timeoutMs = 5_000): Promise<ProbeResult> {
  const n = t.names ?? TEMPORAL_NAMES;
  const parts = splitAddress(t.address);
  if (!parts) return Promise.resolve({ ok: false, problem: `${t.address} is not <host>:<port>` });
  const { host, port } = parts;
  return new Promise((resolve) => {
    let handshakeDone = false;
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(
      () => done({ ok: false, problem: `${t.address} did not answer HTTP/2 within ${timeoutMs} ms` }),
      timeoutMs,
    );
    const presentedCert = Boolean(t.tls?.cert && t.tls.key);
    const sock: Socket = t.tls
      ? tlsConnect({
          host,
          port,
          // SNI carries names only; an IP address is still checked against the IP SANs.
          ...(t.tls.serverName ? { servername: t.tls.serverName } : isIP(host) ? {} : { servername: host }),
          ...(t.tls.ca ? { ca: t.tls.ca } : {}),
          ...(presentedCert ? { cert: t.tls.cert, key: t.tls.key } : {}),
          ALPNProtocols: ['h2'],
        })
      : netConnect(port, host);
    const speak = () => {
      handshakeDone = true;
      if (t.tls && (sock as TLSSocket).alpnProtocol !== 'h2')
        return done({
          ok: false,
          problem: `${t.address} did not agree to HTTP/2 over TLS (ALPN h2); a TLS proxy in front of Temporal must offer h2`,
        });
      sock.write(H2_PREFACE);
    };
    sock.once(t.tls ? 'secureConnect' : 'connect', speak);
    sock.once('data', (d: Buffer) => {
      // A frame header: 3 bytes length, then the type; the server's first frame is SETTINGS (4).
      if (d.length >= 4 && d[3] === 4) return done({ ok: true });
      if (!t.tls && (d[0] === 0x15 || d[0] === 0x16))
        return done({
          ok: false,
          problem: `${t.address} speaks TLS: set ${n.tls}=true (and ${n.ca} for a private CA)`,
        });
      const text = d.subarray(0, 12).toString('latin1');
      done({
        ok: false,
        problem: /^HTTP\/1/.test(text)
          ? `${t.address} answers HTTP/1, not gRPC: is it the Temporal frontend port (7233)?`
          : `${t.address} does not answer like a gRPC server`,
      });
    });
    sock.once('error', (err: NodeJS.ErrnoException) =>
      done({ ok: false, problem: explainHandshakeError(err, t) }),
    );
    sock.once('close', () => {
      let problem: string;
      if (!handshakeDone)
        problem = t.tls
          ? `${t.address} closed the connection during the TLS handshake`
          : `${t.address} closed the connection at once`;
      else if (!t.tls)
        problem = `${t.address} does not answer plaintext gRPC; if it requires TLS, set ${n.tls}=true (and ${n.ca} for a private CA)`;
      else if (presentedCert)
        // A server that checks client certificates after the handshake (TLS 1.3) closes here.
        problem = `the server refused our client certificate (${n.cert}): it closed the connection right after the TLS handshake; is the certificate signed by a CA the server trusts for clients?`;
      else problem = `${t.address} closed the connection after the TLS handshake without answering HTTP/2`;
      done({ ok: false, problem });
    });
  });
}
