import { UsageError } from "../errors.ts";
import { locateModel } from "../model/locate.ts";
import { readOnnxInfo, type TensorInfo } from "../model/onnx_file.ts";
import { parseFlags } from "./args.ts";
import { parseDeviceFeatureSpec } from "../features/spec.ts";

export const INSPECT_HELP = `edgeinfer inspect: show what an ONNX model expects and declares

Usage: edgeinfer inspect MODEL [--json]

Prints the inputs and outputs with their types and shapes, the edgeinfer.* metadata (features,
threshold, score output, name, version) and any other metadata, the opsets, the file size and
its sha256.

  --json    one JSON object instead of text

Examples
  edgeinfer inspect models/car-anomaly.onnx
  edgeinfer inspect models/car-anomaly.onnx --json | jq .metadata
`;

export async function inspectCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags(
    "inspect",
    argv,
    { json: { type: "boolean", default: false } },
    true,
  );
  if (positionals.length !== 1) {
    throw new UsageError("inspect needs exactly one MODEL path (see 'edgeinfer inspect --help')");
  }
  const path = positionals[0];
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(locateModel(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new UsageError(`model '${path}' does not exist`);
    throw new UsageError(`model '${path}' cannot be read: ${(err as Error).message}`);
  }
  let info;
  try {
    info = readOnnxInfo(bytes);
  } catch (err) {
    throw new UsageError(`'${path}' is not an ONNX model (${(err as Error).message})`);
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  const report = { path, bytes: bytes.length, sha256, ...info };

  if (values.json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  const meta = info.metadata;
  const lines = [
    `model     ${path}`,
    `size      ${bytes.length} bytes`,
    `sha256    ${sha256}`,
    `ir        ${info.irVersion}, opsets ${info.opsets.map((o) => `${o.domain} ${o.version}`).join(", ")}` +
    (info.producer ? `, producer ${info.producer}` : ""),
    "inputs",
    ...info.inputs.map(describeTensor),
    "outputs",
    ...info.outputs.map(describeTensor),
  ];
  const edgeinfer = Object.keys(meta).filter((k) => k.startsWith("edgeinfer."));
  if (edgeinfer.length === 0) {
    lines.push("edgeinfer metadata: none (pass --features/--threshold/--score-output to run)");
  } else {
    lines.push("edgeinfer metadata");
    for (const key of ["name", "version", "score", "threshold"]) {
      if (meta[`edgeinfer.${key}`] !== undefined) {
        lines.push(`  ${key.padEnd(10)}${meta[`edgeinfer.${key}`]}`);
      }
    }
    const features = meta["edgeinfer.features"];
    let names: unknown;
    if (features !== undefined) {
      try {
        names = JSON.parse(features);
      } catch { /* shown raw below */ }
      if (Array.isArray(names)) {
        lines.push(`  features  ${names.length}`);
        names.forEach((name, i) => lines.push(`    ${String(i).padStart(3)}  ${name}`));
      } else {
        lines.push(`  features  ${features} (not a JSON array: edgeinfer will ignore it)`);
      }
    }
    const device = meta["edgeinfer.device_features"];
    if (device !== undefined) {
      try {
        const spec = parseDeviceFeatureSpec(device);
        const first = Array.isArray(names) ? names.length : 0;
        lines.push(
          `  device features  ${spec.features.length}, per '${spec.key}' in event time '${spec.time}' ` +
            `(${spec.timeUnit}); README "Per-device features"`,
        );
        spec.features.forEach((f, i) =>
          lines.push(
            `    ${String(first + i).padStart(3)}  ${f.name} = ${f.op} of ${f.field} over ${f.seconds} s`,
          )
        );
      } catch (err) {
        lines.push(`  device features  invalid: ${(err as Error).message}`);
      }
    }
  }
  const other = Object.keys(meta).filter((k) => !k.startsWith("edgeinfer."));
  if (other.length > 0) {
    lines.push("other metadata");
    for (const key of other) lines.push(`  ${key}: ${meta[key]}`);
  }
  console.log(lines.join("\n"));
}

function describeTensor(t: TensorInfo): string {
  return `  ${t.name}  ${t.type}[${t.shape.map((d) => d ?? "?").join(", ")}]`;
}
