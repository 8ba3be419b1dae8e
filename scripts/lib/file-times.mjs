// A node:test reporter beside `spec`: collects each test file's wall time (hooks included) and the
// pass/fail count of its tests, for scripts/test to print after the run (slow files visible).
// Output: one JSON line per file.
export default async function* fileTimes(source) {
  const files = new Map();
  const of = (file) => {
    if (!files.has(file)) files.set(file, { file, ms: 0, passed: 0, failed: 0, skipped: 0 });
    return files.get(file);
  };
  for await (const event of source) {
    const d = event.data;
    if (!d?.file) continue;
    if (d.name === d.file && ['test:complete', 'test:pass', 'test:fail'].includes(event.type)) {
      // The file itself, run as one child process: its duration covers before/after hooks too.
      const f = of(d.file);
      f.ms = Math.max(f.ms, d.details?.duration_ms ?? 0);
      if (d.details?.passed === false || event.type === 'test:fail') f.fileFailed = true;
      continue;
    }
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const f = of(d.file);
    if (d.details?.type === 'suite') continue;
    if (d.skip || d.todo) f.skipped++;
    else if (event.type === 'test:pass') f.passed++;
    else f.failed++;
  }
  for (const f of files.values()) {
    // A file that failed outside its tests (a hook, a crash) counts as one failure.
    if (f.fileFailed && f.failed === 0) f.failed = 1;
    yield JSON.stringify(f) + '\n';
  }
}
