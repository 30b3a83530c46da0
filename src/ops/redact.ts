/**
 * The one place secrets are taken out of text bound for people: the
 * user-info (`user:password@`) of every URL in it. Applied where text
 * leaves the process — every log line (both sinks), the commands' stdout
 * and stderr, the ops endpoint's responses — so an option such as
 * `S3_ENDPOINT=http://user:pw@host` never shows its password, whichever
 * message quotes it.
 */

export const REDACTED_USERINFO = "<redacted>";

/**
 * A URL's scheme and user-info: greedy up to the last `@` before the host's
 * end, so a raw `@` inside a password is taken too. Only what ends an
 * authority (`/`, `?`, `#`) or a word stops it: a password may hold quotes,
 * `<`, `>` or a backslash (JSON logs escape a quote as `\"`), and text after a
 * quoted URL is at worst redacted too, never shown.
 */
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#]*@/gi;

/** `text` with the user-info of every URL in it replaced. */
export function redactUrls(text: string): string {
  return text.replace(USERINFO, `$1${REDACTED_USERINFO}@`);
}

/**
 * One option's value that should be a URL, with everything between its
 * scheme and its last `@` replaced: a password typed unencoded may hold
 * `/`, `?` or `#` (which end a URL's user-info in `redactUrls`), and such a
 * value, not being a valid URL, is exactly the one an error message quotes.
 */
export function redactUrlValue(value: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value);
  const at = value.lastIndexOf("@");
  if (!scheme || at < scheme[0].length) return redactUrls(value);
  return `${scheme[0]}${REDACTED_USERINFO}${value.slice(at)}`;
}
