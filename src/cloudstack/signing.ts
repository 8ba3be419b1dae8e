import { createHmac } from 'node:crypto';

/**
 * CloudStack request signing exactly as the management server verifies it
 * (CloudStack's ApiServer.verifyRequest): every parameter but `signature`,
 * sorted by name as sent, `name=value` with the value encoded like Java's URLEncoder and then
 * `+` → `%20`, joined with `&`, the whole string lower-cased, HMAC-SHA1 with the secret, Base64.
 */

/** Java URLEncoder.encode(v, "UTF-8") with `+` → `%20`: keeps A-Z a-z 0-9 . - * _ only. */
export function javaEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()~]/g,
    (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase(),
  );
}

export function stringToSign(params: Record<string, string>): string {
  return Object.keys(params)
    .filter((k) => k.toLowerCase() !== 'signature')
    .sort() // UTF-16 code-unit order, as Java's Collections.sort on Strings
    .map((k) => `${k}=${javaEncode(params[k]!)}`)
    .join('&')
    .toLowerCase();
}

export function sign(params: Record<string, string>, secretKey: string): string {
  return createHmac('sha1', secretKey).update(stringToSign(params)).digest('base64');
}

/** The query string a client sends: the same encoded pairs plus the percent-encoded signature. */
export function signedQuery(params: Record<string, string>, secretKey: string): string {
  const pairs = Object.keys(params)
    .sort()
    .map((k) => `${encodeURIComponent(k)}=${javaEncode(params[k]!)}`);
  return `${pairs.join('&')}&signature=${encodeURIComponent(sign(params, secretKey))}`;
}

/**
 * `expires` for signatureversion=3 as `yyyy-MM-dd'T'HH:mm:ssZ` in UTC, e.g.
 * 2026-12-02T00:40:00+0000: CloudStack's own date pattern. Older releases parse only this form
 * (a trailing `Z`, which cloudstack-go sends, fails there as a 401); current ones parse both.
 */
export function expiresIn(ms: number, now = Date.now()): string {
  return new Date(now + ms).toISOString().replace(/\.\d{3}Z$/, '+0000');
}
