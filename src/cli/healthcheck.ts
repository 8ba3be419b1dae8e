// `volume-lifecycle healthcheck`: the container image's HEALTHCHECK. HEALTHCHECK_URL (default
// the worker's Temporal metrics, http://127.0.0.1:9464/metrics) must answer 2xx; for a
// /metrics URL the worker must also have pollers running (a worker that lost Temporal is up
// but not healthy).
const url = process.env.HEALTHCHECK_URL || 'http://127.0.0.1:9464/metrics';

function pollers(metrics: string): number {
  let n = 0;
  for (const m of metrics.matchAll(/^temporal_num_pollers\{[^}]*\}\s+([\d.eE+-]+)/gm)) n += Number(m[1]);
  return n;
}

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4_000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  if (new URL(url).pathname.endsWith('/metrics')) {
    const n = pollers(await res.text());
    if (n <= 0) throw new Error(`${url}: no Temporal pollers running`);
  }
  process.exit(0);
} catch (err) {
  const cause = (err as Error & { cause?: { code?: string } }).cause?.code;
  console.error(`unhealthy: ${(err as Error).message}${cause ? ` (${cause})` : ''}`);
  process.exit(1);
}
