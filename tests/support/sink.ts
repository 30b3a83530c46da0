/**
 * Sinks for tests, written as `put` alone: `withPutNew` adds the
 * never-replace `putNew` every Sink must have, keyed on what this sink has
 * stored so far (a key it stored is not stored again).
 */

import type { Sink } from "../../src/store/sink.ts";

export function withPutNew<T extends Omit<Sink, "putNew">>(sink: T): T & Sink {
  const stored = new Set<string>();
  const put = sink.put.bind(sink);
  return Object.assign(sink, {
    put: async (...args: Parameters<Sink["put"]>) => {
      await put(...args);
      stored.add(args[0]);
    },
    putNew: async (...args: Parameters<Sink["put"]>) => {
      if (stored.has(args[0])) return false;
      await put(...args);
      stored.add(args[0]);
      return true;
    },
  });
}
