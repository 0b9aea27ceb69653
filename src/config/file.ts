/**
 * Config files (`edgeinfer run --config edge.yaml`, `edgeinfer config check edge.yaml`): YAML (JSON is YAML
 * too) whose keys are `run`'s flags without the dashes in front, e.g.
 *
 *     model: models/car-anomaly.onnx
 *     source: mqtt://127.0.0.1:1883/cars/+/sensors?qos=1
 *     sink: kafka://${KAFKA:-127.0.0.1:9092}/car-predictions
 *     batch-size: 256
 *     features: [speed, coolant_temp]      # a list, or "speed,coolant_temp"
 *     quiet: true
 *
 * A file becomes flags placed before the command line's, so a flag given on the command line overrides the
 * file's key and both go through the same checks. `${VAR}` and `${VAR:-default}` are replaced from the
 * environment in every string (`$${` writes a literal `${`). The schema (zod) is built from `run`'s flags:
 * a key that is not one is refused with the nearest valid key, a value of the wrong kind names its key
 * path, what was found and what is allowed.
 */
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { UsageError } from "../errors.ts";
import { maskUrl } from "./endpoint.ts";

/** A command's flags as node:util parseArgs takes them. */
export type FlagOptions = Record<string, { type: "string" | "boolean" }>;

/** Keys whose values are lists (a YAML list or a comma-separated string). */
const LIST_KEYS = new Set(["features", "passthrough"]);

/** The settings a config file holds, after interpolation and validation. */
export type RunSettings = Record<string, string | number | boolean | string[]>;

function schemaFor(flags: FlagOptions) {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, { type }] of Object.entries(flags)) {
    if (name === "config") continue;
    shape[name] = (type === "boolean"
      ? z.boolean()
      : LIST_KEYS.has(name)
      ? z.union([z.string(), z.array(z.union([z.string(), z.number()]))])
      : z.union([z.string(), z.number()])).optional();
  }
  return z.strictObject(shape);
}

/** Reads, interpolates and validates `path`; throws a UsageError naming the file and the key. */
export function loadConfig(path: string, flags: FlagOptions, env = Deno.env.toObject()): RunSettings {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(`--config ${path}: cannot read it: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new UsageError(`${path}: not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new UsageError(`${path}: expected a mapping of settings (key: value), found ${describe(doc)}`);
  }
  if ("pipelines" in doc) {
    throw new UsageError(
      `${path}: pipelines: several pipelines in one process are not supported yet; write one pipeline's ` +
        `keys at the top level and run one process per pipeline`,
    );
  }
  const interpolated = interpolate(doc, env, path, []);
  const result = schemaFor(flags).safeParse(interpolated);
  if (!result.success) throw new UsageError(explain(path, result.error.issues, flags, interpolated));
  return result.data as RunSettings;
}

/** The flags a config file stands for, to be placed before the command line's. */
export function settingsToArgv(settings: RunSettings): string[] {
  const argv: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined || value === false) continue;
    if (value === true) argv.push(`--${key}`);
    else argv.push(`--${key}=${Array.isArray(value) ? value.join(",") : String(value)}`);
  }
  return argv;
}

/**
 * Replaces `--config FILE` (or `--config=FILE`) in `argv` by the file's flags, placed first so that the
 * command line's own flags override them. Without --config, argv is returned as it is.
 */
export function expandConfig(argv: string[], flags: FlagOptions): string[] {
  const at = argv.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (at < 0) return argv;
  const inline = argv[at].startsWith("--config=");
  const path = inline ? argv[at].slice("--config=".length) : argv[at + 1];
  if (path === undefined || path === "") throw new UsageError("--config needs a file: --config edge.yaml");
  const rest = [...argv.slice(0, at), ...argv.slice(at + (inline ? 1 : 2))];
  if (rest.some((a) => a === "--config" || a.startsWith("--config="))) {
    throw new UsageError("--config may be given once");
  }
  return [...settingsToArgv(loadConfig(path, flags)), ...rest];
}

/** The settings as YAML-ish lines with every password masked, for `config check`. */
export function describeSettings(settings: RunSettings): string {
  return Object.entries(settings).map(([key, value]) => {
    const text = Array.isArray(value) ? `[${value.join(", ")}]` : String(value);
    return `${key}: ${/password/i.test(key) ? "***" : maskUrl(text)}`;
  }).join("\n");
}

const VARIABLE = /\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function interpolate(value: unknown, env: Record<string, string>, path: string, keys: string[]): unknown {
  if (typeof value === "string") {
    return value.replace(VARIABLE, (whole, escaped: string, name: string, fallback: string | undefined) => {
      if (escaped) return whole.slice(1); // $${VAR} → ${VAR}
      const found = env[name];
      if (found !== undefined && found !== "") return found;
      if (fallback !== undefined) return fallback;
      throw new UsageError(
        `${path}: ${keys.join(".") || "(top)"}: environment variable ${name} is not set ` +
          `(set it, or write \${${name}:-default} for a default)`,
      );
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, path, [...keys, String(i)]));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, interpolate(v, env, path, [...keys, k])]),
    );
  }
  return value;
}

function explain(path: string, issues: z.core.$ZodIssue[], flags: FlagOptions, doc: unknown): string {
  const keys = Object.keys(flags).filter((k) => k !== "config");
  return issues.slice(0, 5).map((issue) => {
    const where = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => {
        const near = nearest(key, keys);
        return `${path}: '${key}' is not a setting` +
          (near ? `; did you mean '${near}'?` : `; settings: ${keys.join(", ")}`);
      }).join("; ");
    }
    const found = describe(valueAt(doc, issue.path));
    const type = flags[String(issue.path[0])]?.type;
    const allowed = type === "boolean"
      ? "true or false"
      : LIST_KEYS.has(String(issue.path[0]))
      ? "a list of names, or a comma-separated string"
      : "a string or a number";
    return `${path}: ${where}: found ${found}, allowed: ${allowed}`;
  }).join("; ");
}

function valueAt(doc: unknown, keys: PropertyKey[]): unknown {
  let v = doc;
  for (const k of keys) v = (v as Record<PropertyKey, unknown> | undefined)?.[k];
  return v;
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** The valid key closest to `key` (edit distance at most 3), if any. */
function nearest(key: string, keys: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 4;
  for (const k of keys) {
    const d = distance(key.replace(/_/g, "-"), k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = row[j];
      row[j] = next;
    }
  }
  return row[b.length];
}
