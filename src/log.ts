/** Diagnostics go to stderr so stdout stays clean for records. */
const encoder = new TextEncoder();

export function logLine(message: string): void {
  Deno.stderr.writeSync(encoder.encode(`edgeinfer: ${message}\n`));
}
