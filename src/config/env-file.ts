/**
 * systemd's EnvironmentFile= format, the subset our templates use: `KEY=VALUE` lines; blank
 * lines and lines starting with `#` or `;` are comments (a `#` later on a line is part of the
 * value, as systemd reads it); whitespace around an unquoted value is dropped; a value in
 * double or single quotes is taken as is, without the quotes. Used by `volumectl doctor` and
 * the release test, to see exactly what a unit's process gets.
 */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue; // systemd ignores such lines too (with a warning)
    let value = m[2]!;
    const q = /^(["'])(.*)\1$/.exec(value);
    if (q) value = q[2]!;
    out[m[1]!] = value;
  }
  return out;
}
