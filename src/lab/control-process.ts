import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * The control worker as a process of its own (control-main), so a test can kill it with SIGKILL
 * and start another. Resolves once it logs that it polls; `env` is its configuration. (Wrapped in
 * an object: an async function returning the subprocess, a thenable, would await its exit.)
 */
export async function startControlWorkerProcess(
  env: Record<string, string>,
  readyTimeoutMs = 120_000,
): Promise<{ process: ResultPromise }> {
  const p = execa('node', ['--import', 'tsx', 'src/worker/control-main.ts'], {
    cwd: ROOT,
    reject: false,
    // Its "control worker ready" line (info) is how we know it polls.
    env: { LOG_LEVEL: 'info', ...env },
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`control worker not ready after ${readyTimeoutMs} ms: ${out}`)),
      readyTimeoutMs,
    );
    const onData = (d: Buffer) => {
      out += d.toString();
      if (!/control worker ready/.test(out)) return;
      clearTimeout(timer);
      p.stdout!.off('data', onData);
      resolve();
    };
    p.stdout!.on('data', onData);
    void p.then((r) => {
      clearTimeout(timer);
      reject(new Error(`control worker exited (${r.exitCode}): ${out}${r.stderr}`));
    });
  });
  return { process: p };
}

/** Wait until the process has died of SIGKILL (a crash-after failpoint); SIGKILL it after `timeoutMs`. */
export async function waitKilled(p: ResultPromise, timeoutMs = 60_000): Promise<void> {
  let timedOut = false;
  const timer = setTimeout(() => ((timedOut = true), p.kill('SIGKILL')), timeoutMs);
  const r = await p;
  clearTimeout(timer);
  if (timedOut) throw new Error(`the control worker was still alive after ${timeoutMs} ms`);
  if (r.signal !== 'SIGKILL') throw new Error(`the control worker ended with ${r.signal ?? r.exitCode}`);
}
