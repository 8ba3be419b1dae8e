import { execa } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import path from 'node:path';
import { createServer, type TLSSocket } from 'node:tls';

/** A throw-away PKI made with openssl: a CA, a server and a client certificate, and strangers. */
export interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second CA and a client certificate it signed: what the server must refuse. */
  otherCaCert: string;
  otherClientCert: string;
  otherClientKey: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await execa('openssl', args, { cwd: dir });
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
  ]);
}

async function makeLeaf(dir: string, name: string, ca: string, ext: string): Promise<void> {
  await writeFile(path.join(dir, `${name}.ext`), ext);
  await openssl(dir, [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${name}`,
  ]);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  ]);
}

export async function makePki(dir: string): Promise<Pki> {
  await makeCa(dir, 'ca');
  await makeCa(dir, 'other-ca');
  const server =
    'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n';
  const client = 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n';
  await makeLeaf(dir, 'server', 'ca', server);
  await makeLeaf(dir, 'client', 'ca', client);
  await makeLeaf(dir, 'other-client', 'other-ca', client);
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCaCert: p('other-ca.crt'),
    otherClientCert: p('other-client.crt'),
    otherClientKey: p('other-client.key'),
  };
}

/**
 * A mutual-TLS terminating TCP proxy in front of the plaintext dev server: the Temporal CLI's
 * `server start-dev` has no TLS flags, so this plays the TLS frontend. It offers ALPN h2 (gRPC
 * clients insist on it), asks for a client certificate and refuses any not signed by `ca`,
 * then pipes the decrypted bytes to `upstream` (gRPC over plaintext HTTP/2).
 */
export async function startMtlsProxy(opts: {
  upstream: string;
  cert: string;
  key: string;
  ca: string;
}): Promise<{ address: string; refused: () => number; close: () => Promise<void> }> {
  const [host, port] = [
    opts.upstream.slice(0, opts.upstream.lastIndexOf(':')),
    Number(opts.upstream.slice(opts.upstream.lastIndexOf(':') + 1)),
  ];
  const sockets = new Set<Socket>();
  let refused = 0;
  const server = createServer(
    {
      cert: await readFile(opts.cert),
      key: await readFile(opts.key),
      ca: await readFile(opts.ca),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (tls: TLSSocket) => {
      const up = netConnect(port, host);
      sockets.add(tls).add(up);
      const end = () => {
        tls.destroy();
        up.destroy();
        sockets.delete(tls);
        sockets.delete(up);
      };
      tls.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
      tls.pipe(up).pipe(tls);
    },
  );
  server.on('tlsClientError', () => {
    refused++;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port: listening } = server.address() as { port: number };
  return {
    address: `127.0.0.1:${listening}`,
    refused: () => refused,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
