/**
 * A mistake the user can fix (bad flag, URL, config or model path). main.ts prints its message
 * on one line, without a stack trace, and exits with code 2.
 */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Something failed at run time in a way the user should read about, not a bug (exit code 1). */
export class RuntimeError extends Error {
  override name = "RuntimeError";
}
