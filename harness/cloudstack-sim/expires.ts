/**
 * The `expires` parameter as CloudStack's DateUtil.parseTZDateString reads it (signature
 * version 3): a date and time to the second followed by an offset, in one of the forms the
 * current server parses:
 *   2030-01-01T00:00:00+0000        CloudStack's documented pattern (yyyy-MM-dd'T'HH:mm:ssZ),
 *                                   parsed by old and current releases alike
 *   2030-01-01T00:00:00Z            RFC 3339 / ISO-8601, also with +00:00-style offsets and a
 *   2030-01-01T00:00:00.5+01:00     fraction of a second (cloudstack-go sends the `Z` form)
 *   2030-01-01T00:00:00Z+0000       the legacy literal-Z-then-offset form
 * Anything else — no offset, a space for `T`, a date that does not exist, hour 24, an offset
 * beyond ±18:00 — is unparsable, which the server answers with a 401. Where Java's parsers are
 * lenient (minutes without seconds, lower-case t/z, a fraction before +0000, 2030-02-30 rounded
 * down on the +0000 form) this is stricter: a test double may refuse more, never less.
 * Returns milliseconds since the epoch, or undefined when CloudStack could not parse it.
 */
const FORM =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:(?:\.(\d{1,9}))?(?:Z|([+-])(\d{2}):(\d{2}))|([+-])(\d{2})(\d{2})|Z([+-])(\d{2})(\d{2}))$/;

export function parseExpires(value: string): number | undefined {
  const m = FORM.exec(value);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const fraction = m[7] ? Number(`0.${m[7]}`) : 0;
  // The offset, from whichever of the three offset groups matched (none: `Z`, i.e. UTC).
  const sign = m[8] ?? m[11] ?? m[14];
  const offH = Number(m[9] ?? m[12] ?? m[15] ?? 0);
  const offM = Number(m[10] ?? m[13] ?? m[16] ?? 0);
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  if (offH > 18 || offM > 59 || offH * 60 + offM > 18 * 60) return undefined;
  const offsetMs = (sign === '-' ? -1 : 1) * (offH * 60 + offM) * 60_000;
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day); // not Date.UTC: it maps years 0–99 to 1900–1999
  d.setUTCHours(hour, minute, second, Math.floor(fraction * 1000));
  return d.getTime() - offsetMs;
}

function daysIn(year: number, month: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, 0); // day 0 of the next month: the last day of this one
  return d.getUTCDate();
}
