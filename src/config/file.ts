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
 * Several pipelines in one process: `pipelines:` maps names to settings of the same keys; the top level's
 * keys are their defaults, and the process-wide keys (PROCESS_KEYS) may only be there (src/config/pipelines.ts).
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
import { inheritDefaults, PIPELINE_NAME, PROCESS_KEYS } from "./pipelines.ts";

/** A command's flags as node:util parseArgs takes them. */
export type FlagOptions = Record<string, { type: "string" | "boolean" }>;

/** Keys whose values are lists (a YAML list or a comma-separated string). */
const LIST_KEYS = new Set(["features", "passthrough"]);

/** The settings a config file holds, after interpolation and validation. */
export type RunSettings = Record<string, string | number | boolean | string[]>;

/** A config file, validated. */
export interface ConfigFile {
  /** The top level's keys (with `pipelines:`, the process-wide keys and the pipelines' defaults). */
  settings: RunSettings;
  /** With `pipelines:`: each pipeline's settings, the top level's defaults included. */
  pipelines?: Record<string, RunSettings>;
}

function settingsSchema(flags: FlagOptions, except: readonly string[] = []) {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, { type }] of Object.entries(flags)) {
    if (name === "config" || except.includes(name)) continue;
    shape[name] = (type === "boolean"
      ? z.boolean()
      : LIST_KEYS.has(name)
      ? z.union([z.string(), z.array(z.union([z.string(), z.number()]))])
      : z.union([z.string(), z.number()])).optional();
  }
  return shape;
}

/** The top level's keys, plus `pipelines:` whose entries take every key but the process-wide ones. */
function schemaFor(flags: FlagOptions) {
  const pipeline = z.strictObject(settingsSchema(flags, PROCESS_KEYS));
  return z.strictObject({
    ...settingsSchema(flags),
    pipelines: z.record(z.string(), pipeline).optional(),
  });
}

/** Reads, interpolates and validates `path`; throws a UsageError naming the file and the key. */
export function loadConfig(path: string, flags: FlagOptions, env = Deno.env.toObject()): ConfigFile {
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
  if ("pipelines" in doc) checkPipelineNames(path, (doc as { pipelines: unknown }).pipelines);
  const interpolated = interpolate(doc, env, path, []);
  const result = schemaFor(flags).safeParse(interpolated);
  if (!result.success) throw new UsageError(explain(path, result.error.issues, flags, interpolated));
  const { pipelines, ...settings } = result.data as RunSettings & { pipelines?: Record<string, RunSettings> };
  if (pipelines === undefined) return { settings };
  return {
    settings,
    pipelines: Object.fromEntries(
      Object.entries(pipelines).map((
        [name, own],
      ) => [name, inFlagOrder(flags, inheritDefaults(settings, own))]),
    ),
  };
}

/** The settings in the flags' order (model, source, sink, …), as `config check` prints them. */
function inFlagOrder(flags: FlagOptions, settings: RunSettings): RunSettings {
  return Object.fromEntries(Object.keys(flags).filter((k) => k in settings).map((k) => [k, settings[k]]));
}

/** `pipelines:` must be a non-empty mapping whose names can prefix log lines. */
function checkPipelineNames(path: string, pipelines: unknown) {
  if (pipelines === null || typeof pipelines !== "object" || Array.isArray(pipelines)) {
    throw new UsageError(
      `${path}: pipelines: found ${describe(pipelines)}, allowed: a mapping of pipeline names to their ` +
        `settings (pipelines: {cars: {model: ..., source: ...}})`,
    );
  }
  const names = Object.keys(pipelines);
  if (names.length === 0) throw new UsageError(`${path}: pipelines: is empty; name at least one pipeline`);
  const bad = names.find((name) => !PIPELINE_NAME.test(name));
  if (bad !== undefined) {
    throw new UsageError(
      `${path}: pipelines: '${bad}' is not a valid pipeline name (letters, digits, '-' and '_')`,
    );
  }
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

/** Takes `--config FILE` (or `--config=FILE`) out of `argv`: the file's path, and the other arguments. */
export function takeConfigFlag(argv: string[]): { path: string | undefined; rest: string[] } {
  const at = argv.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (at < 0) return { path: undefined, rest: argv };
  const inline = argv[at].startsWith("--config=");
  const path = inline ? argv[at].slice("--config=".length) : argv[at + 1];
  if (path === undefined || path === "") throw new UsageError("--config needs a file: --config edge.yaml");
  const rest = [...argv.slice(0, at), ...argv.slice(at + (inline ? 1 : 2))];
  if (rest.some((a) => a === "--config" || a.startsWith("--config="))) {
    throw new UsageError("--config may be given once");
  }
  return { path, rest };
}

/**
 * Replaces `--config FILE` in `argv` by the file's flags, placed first so that the command line's own flags
 * override them. Without --config, argv is returned as it is. For a file of one pipeline (no `pipelines:`).
 */
export function expandConfig(argv: string[], flags: FlagOptions): string[] {
  const { path, rest } = takeConfigFlag(argv);
  if (path === undefined) return rest;
  const config = loadConfig(path, flags);
  if (config.pipelines !== undefined) {
    throw new UsageError(`${path}: pipelines: this command takes a file of one pipeline`);
  }
  return [...settingsToArgv(config.settings), ...rest];
}

/** The settings as YAML-ish lines with every password masked, for `config check`. */
export function describeSettings(settings: RunSettings, indent = ""): string {
  return Object.entries(settings).map(([key, value]) => {
    const text = Array.isArray(value) ? `[${value.join(", ")}]` : String(value);
    return `${indent}${key}: ${/password/i.test(key) ? "***" : maskUrl(text)}`;
  }).join("\n");
}

/** A whole config file as `config check` prints it: each pipeline's effective settings after inheritance. */
export function describeConfig(config: ConfigFile): string {
  if (config.pipelines === undefined) return describeSettings(config.settings);
  const processWide = Object.fromEntries(
    Object.entries(config.settings).filter(([key]) => PROCESS_KEYS.includes(key)),
  );
  return [
    ...(Object.keys(processWide).length > 0 ? [describeSettings(processWide)] : []),
    "pipelines:",
    ...Object.entries(config.pipelines).map(([name, settings]) =>
      `  ${name}:\n${describeSettings(settings, "    ")}`
    ),
  ].join("\n");
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
  const pipelineKeys = keys.filter((k) => !PROCESS_KEYS.includes(k));
  return issues.slice(0, 5).map((issue) => {
    const where = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      // At the top level (path []) or in a pipeline (path ["pipelines", name]).
      const inPipeline = issue.path.length > 0;
      return issue.keys.map((key) => {
        if (inPipeline && PROCESS_KEYS.includes(key)) {
          return `${path}: ${where}.${key}: applies to the whole process; move it to the top level`;
        }
        const valid = inPipeline ? pipelineKeys : [...keys, "pipelines"];
        const near = nearest(key, valid);
        return `${path}: ${inPipeline ? `${where}: ` : ""}'${key}' is not a setting` +
          (near ? `; did you mean '${near}'?` : `; settings: ${valid.join(", ")}`);
      }).join("; ");
    }
    const found = describe(valueAt(doc, issue.path));
    // The setting's name: `key`, or `pipelines.<name>.key`.
    const key = String(issue.path[0] === "pipelines" ? issue.path[2] : issue.path[0]);
    const allowed = issue.path[0] === "pipelines" && issue.path.length === 2
      ? "a mapping of settings (key: value)"
      : flags[key]?.type === "boolean"
      ? "true or false"
      : LIST_KEYS.has(key)
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
