/**
 * Logging set-up (LogTape): one line per event to stderr, as text or JSON
 * lines, or to a size-rotated file (stderr then gets errors only). Called
 * once, by main.
 * Library modules only call `getLogger(["l2", <module>])`.
 */

import {
  configure,
  dispose,
  getConsoleSink,
  getTextFormatter,
  jsonLinesFormatter,
  type LogLevel,
  type Sink,
  type TextFormatter,
  withFilter,
} from "@logtape/logtape";
import { getRotatingFileSink } from "@logtape/file";
import { redactUrls } from "./redact.ts";

export interface LoggingOptions {
  readonly level: LogLevel;
  readonly format: "text" | "json";
  readonly file?: string;
  readonly maxBytes?: number;
  readonly maxFiles?: number;
}

const LEVELS: LogLevel[] = ["trace", "debug", "info", "warning", "error", "fatal"];

export async function setUpLogging(options: LoggingOptions): Promise<void> {
  const format: TextFormatter = options.format === "json"
    ? jsonLinesFormatter
    : getTextFormatter({ timestamp: "rfc3339", value: oneLineValue });
  // Whatever a message quotes (a config value, an SDK error), no URL password leaves.
  const formatter: TextFormatter = (record) => redactUrls(format(record));
  // Everything to stderr: stdout is reserved for command output (reports, plists).
  const toStderr = Object.fromEntries(LEVELS.map((l) => [l, "error" as const])) as Record<
    LogLevel,
    "error"
  >;
  const console = getConsoleSink({ formatter, levelMap: toStderr });
  const sinks: Record<string, Sink> = {
    // With a file, stderr keeps errors only: launchd writes it to a file it
    // never rotates (StandardErrorPath), so a 24/7 process must not fill it.
    stderr: options.file ? withFilter(console, "error") : console,
  };
  if (options.file) {
    sinks.file = getRotatingFileSink(options.file, {
      formatter,
      // Events are few: write each line through, so a crash or SIGKILL
      // never loses the lines that explain it.
      bufferSize: 0,
      maxSize: options.maxBytes,
      maxFiles: options.maxFiles,
    });
  }
  const names = Object.keys(sinks);
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: ["l2"], lowestLevel: options.level, sinks: names },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: names },
    ],
  });
}

/**
 * A value in a text log line, on that line: a string as it is, an error as
 * its name, message and code (its stack and the SDK's metadata would take a
 * dozen lines), anything else inspected with its line breaks folded.
 */
export function oneLineValue(value: unknown, inspect: (value: unknown) => string): string {
  if (typeof value === "string") return escapeBreaks(value);
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    const named = value.message ? `${value.name}: ${value.message}` : value.name;
    return escapeBreaks(typeof code === "string" ? `${named} (${code})` : named);
  }
  return inspect(value).replace(/\s*\n\s*/g, " ");
}

function escapeBreaks(text: string): string {
  return text.replaceAll("\r", "\\r").replaceAll("\n", "\\n");
}

/** Flushes and closes sinks (the file sink buffers). */
export async function closeLogging(): Promise<void> {
  await dispose();
}
