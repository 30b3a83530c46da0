/**
 * Byte helpers shared by the archive's encoding and the batch text that
 * feeds it: the lowest place that needs them, so every layer can import them.
 */

/**
 * One buffer holding `parts` back to back. With `allocate`, always a copy,
 * in the buffer it gives for the total length (the gzip pool reuses its
 * input buffers); without, a single part is returned as it is.
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array;
export function concatBytes(
  parts: readonly Uint8Array[],
  allocate: (bytes: number) => ArrayBuffer,
): Uint8Array<ArrayBuffer>;
export function concatBytes(
  parts: readonly Uint8Array[],
  allocate?: (bytes: number) => ArrayBuffer,
): Uint8Array {
  if (parts.length === 1 && !allocate) return parts[0];
  let length = 0;
  for (const part of parts) length += part.length;
  const out = allocate ? new Uint8Array(allocate(length), 0, length) : new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
