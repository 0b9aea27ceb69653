/** Runs edgeinfer's main.ts as a separate process, the way an operator would. */
const ROOT = new URL("../../", import.meta.url);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-ffi",
  "--allow-sys",
  "--allow-run", // bench --source starts `edgeinfer run` as a child process
];

const MAIN = new URL("main.ts", ROOT).pathname;

export async function runCli(
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; cwd?: string } = {},
) {
  const child = new Deno.Command(Deno.execPath(), {
    // --config: the imports map must be found when the working directory is elsewhere.
    args: ["run", ...PERMISSIONS, "--config", new URL("deno.json", ROOT).pathname, MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  } as CliResult;
}

/** Path of a file in ../shared (the conformance fixtures), or undefined when it is not there. */
export function sharedFile(relative: string): string | undefined {
  const path = new URL(`../shared/${relative}`, ROOT).pathname;
  try {
    Deno.statSync(path);
    return path;
  } catch {
    return undefined;
  }
}

export interface ExpectedScore {
  eventid: number;
  score: number;
}

/**
 * The seed fixture in ../shared/seed-ksql-udf: the KSQL UDF's model, its messages (the path, and the
 * non-empty lines) and their reference scores by event id; undefined where ../shared is absent.
 */
export function seedFixture():
  | { model: string; messages: string; lines: string[]; expected: Map<string, number> }
  | undefined {
  const model = sharedFile("seed-ksql-udf/ecg-autoencoder.onnx");
  const messages = sharedFile("seed-ksql-udf/ecg_discord_test.msgs");
  const scores = sharedFile("seed-ksql-udf/expected-scores.json");
  if (!model || !messages || !scores) return undefined;
  const lines = Deno.readTextFileSync(messages).split("\n").filter((l) => l.trim() !== "");
  const expected = new Map(
    (JSON.parse(Deno.readTextFileSync(scores)) as ExpectedScore[]).map((s) => [String(s.eventid), s.score]),
  );
  return { model, messages, lines, expected };
}

/** The KSQL UDF's reference scores, compared within the fixture README's float32 tolerance. */
export function assertSeedScore(got: number, expected: number, label: string) {
  const tolerance = 1e-5 * Math.abs(expected) + 1e-6;
  if (!(Math.abs(got - expected) <= tolerance)) {
    throw new Error(
      `${label}: score ${got} differs from the reference ${expected} by more than ${tolerance}`,
    );
  }
}

/** A running edgeinfer process whose output is collected as it comes. */
export interface RunningCli {
  child: Deno.ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stderr matches, rejects after `timeoutMs` (with the stderr so far). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Waits for exit; returns the exit code. */
  exit(): Promise<number>;
  /** The exit code once the process has exited, undefined while it runs. */
  readonly exited: number | undefined;
}

export function spawnCli(args: string[], env: Record<string, string> = {}): RunningCli {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "main.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let exited: number | undefined;
  child.status.then((s) => exited = s.code);
  let out = "";
  let err = "";
  const decoder = () => new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>, append: (s: string) => void) => {
    const d = decoder();
    for await (const chunk of stream) append(d.decode(chunk, { stream: true }));
  };
  const drained = Promise.all([drain(child.stdout, (s) => out += s), drain(child.stderr, (s) => err += s)]);
  return {
    child,
    get exited() {
      return exited;
    },
    stdout: () => out,
    stderr: () => err,
    async waitForStderr(pattern, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(err)) {
        if (Date.now() > deadline || exited !== undefined) {
          throw new Error(`timed out waiting for ${pattern}; stderr so far:\n${err}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async exit() {
      const status = await child.status;
      await drained;
      return status.code;
    },
  };
}
