/**
 * Byte helpers shared by the archive's encoding and the batch text that
 * feeds it: the lowest place that needs them, so every layer can import them.
 */

/** One buffer holding `parts` back to back. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
