import { UsageError } from "../errors.ts";
import { maskUrl } from "./endpoint.ts";

/**
 * Reads the query parameters of an endpoint URL, rejecting unknown ones (a typo must not be
 * silently ignored) and naming the flag and the allowed keys in the error.
 */
export function readQuery(flag: string, params: URLSearchParams, allowed: string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (const [key, value] of params) {
    if (!allowed.includes(key)) {
      throw new UsageError(maskUrl(
        `${flag} has unknown parameter '${key}'; ` +
          (allowed.length ? `allowed: ${allowed.join(", ")}` : "this URL takes no parameters"),
      ));
    }
    values.set(key, value);
  }
  return values;
}

/** A parameter that must be one of a few values. */
export function oneOf<T extends string>(
  flag: string,
  key: string,
  value: string | undefined,
  choices: T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (!(choices as string[]).includes(value)) {
    throw new UsageError(maskUrl(`${flag} parameter ${key}=${value} must be one of ${choices.join(", ")}`));
  }
  return value as T;
}

/** A whole-number parameter within [min, max]; `meaning` says what it is, for the error. */
export function integerIn(
  flag: string,
  key: string,
  value: string | undefined,
  range: { min: number; max: number; fallback: number; meaning: string },
): number {
  if (value === undefined) return range.fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= range.min && n <= range.max)) {
    throw new UsageError(maskUrl(
      `${flag} parameter ${key}=${value} must be a whole number from ${range.min} to ${range.max} ` +
        `(${range.meaning}; default ${range.fallback})`,
    ));
  }
  return n;
}
