import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel, type LogSettings } from "../log.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * node:util parseArgs with errors turned into one-line UsageErrors that name the flag and the
 * command's --help. (jsr:@std/cli cannot be fetched on our machines.)
 */
export function parseFlags<T extends Options>(
  command: string,
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // Node's messages run over several sentences and lines ("Option '--rate' argument is
    // ambiguous.\nDid you forget …?\nTo specify an option argument starting with a dash use
    // '--rate=-XYZ'."): keep them on one line, and point at help.
    const oneLine = message.replace(/\.?\s*\n\s*/g, "; ").replace(/\.$/, "");
    throw new UsageError(`${oneLine} (see 'edgeinfer ${command} --help')`);
  }
}

/** Parses a non-negative integer flag value; names the flag when it is not one. */
export function intFlag(name: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, got '${value}'`);
  }
  return Number(value);
}

/** Parses a finite number flag value; names the flag when it is not one. */
export function numberFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n)) {
    throw new UsageError(`--${name} must be a number, got '${value}'`);
  }
  return n;
}

/** Splits a comma-separated list flag, dropping empty items. */
export function listFlag(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * Parses a duration flag: a number with a unit (`500ms`, `10s`, `5m`, `1h`; a bare number is seconds).
 * Returns milliseconds; names the flag and the accepted forms when the value is not one.
 */
export function durationFlag(name: string, value: string | undefined, fallbackMs: number): number;
export function durationFlag(
  name: string,
  value: string | undefined,
  fallbackMs?: number,
): number | undefined;
export function durationFlag(
  name: string,
  value: string | undefined,
  fallbackMs?: number,
): number | undefined {
  if (value === undefined) return fallbackMs;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (m === null) {
    throw new UsageError(`--${name} must be a duration such as 500ms, 10s, 5m or 1h, got '${value}'`);
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return Math.round(Number(m[1]) * unit);
}

/** The logging flags of run, simulate and bench (with --quiet, which each has). */
export const LOG_FLAGS = {
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  "log-timestamps": { type: "boolean" },
} as const;

/**
 * The log settings the flags ask for. --quiet means --log-level error; an explicit --log-level wins over it
 * (so that a config file's `quiet: true` can be overridden on the command line).
 */
export function logSettings(f: {
  quiet?: boolean;
  "log-format"?: string;
  "log-level"?: string;
  "log-timestamps"?: boolean;
}): LogSettings {
  const format = f["log-format"] ?? "text";
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`--log-format must be ${LOG_FORMATS.join(" or ")}, got '${format}'`);
  }
  const level = f["log-level"] ?? (f.quiet ? "error" : "info");
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got '${level}'`);
  }
  return { format: format as LogFormat, level: level as LogLevel, timestamps: f["log-timestamps"] ?? false };
}
