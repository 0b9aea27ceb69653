import * as ort from "onnxruntime-node";
import { UsageError } from "../errors.ts";
import { locateModel } from "./locate.ts";
import { type OnnxFileInfo, readOnnxInfo } from "./onnx_file.ts";
import { sha256Hex } from "./wire.ts";
import { type DriftBaseline, parseBaseline } from "./drift.ts";
import { type DeviceFeatureSpec, parseDeviceFeatureSpec } from "../features/spec.ts";

/** Flags that override what the model file's edgeinfer.* metadata says. */
export interface ModelOverrides {
  features?: string[];
  threshold?: number;
  scoreOutput?: string;
  /** ONNX Runtime intra-op threads; 1 keeps latency predictable on a small gateway. */
  threads?: number;
  /** The name and version a model delivered over Kafka was published under (else the metadata's). */
  name?: string;
  version?: string;
}

/** An ONNX model ready to score batches of feature rows. */
export class Model {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly info: OnnxFileInfo,
    readonly inputName: string,
    /** Number of input columns (features) per row. */
    readonly width: number,
    /** Names of the fields read from each event, in column order, when known (needed for JSON payloads). */
    readonly features: string[] | undefined,
    /**
     * edgeinfer.device_features: columns computed per device from its recent readings, after `features`
     * (src/features/). Absent for a stateless model.
     */
    readonly deviceFeatures: DeviceFeatureSpec | undefined,
    readonly scoreOutput: string,
    readonly threshold: number | undefined,
    readonly name: string,
    readonly version: string,
    /** Of the model file's bytes: tells a reloaded file apart from the running one. */
    readonly sha256: string,
    /** edgeinfer.baseline: healthy data's bins per feature and for the score (the drift watch's reference). */
    readonly baseline: DriftBaseline | undefined,
  ) {}

  /**
   * Loads a model from a path. The file is read into memory and handed to ONNX Runtime as bytes:
   * in a compiled binary, models under --include live in Deno's virtual file system, which
   * native code cannot open by path.
   */
  static async load(path: string, overrides: ModelOverrides = {}): Promise<Model> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(locateModel(path));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw new UsageError(`--model '${path}' does not exist`);
      if (err instanceof Deno.errors.IsADirectory) {
        throw new UsageError(`--model '${path}' is a directory; give the path of an .onnx file`);
      }
      throw new UsageError(`--model '${path}' cannot be read: ${(err as Error).message}`);
    }
    return Model.fromBytes(bytes, path, overrides);
  }

  static async fromBytes(bytes: Uint8Array, label: string, overrides: ModelOverrides = {}): Promise<Model> {
    let info: OnnxFileInfo;
    try {
      info = readOnnxInfo(bytes);
    } catch (err) {
      throw new UsageError(`--model '${label}' is not an ONNX model (${(err as Error).message})`);
    }
    const meta = info.metadata;
    if (info.inputs.length !== 1) {
      throw new UsageError(
        `--model '${label}' has ${info.inputs.length} inputs (${
          info.inputs.map((i) => i.name).join(", ")
        }); ` +
          `edgeinfer needs one float32 input of shape [N, features]`,
      );
    }
    const input = info.inputs[0];
    if (input.type !== "float32" || input.shape.length !== 2) {
      throw new UsageError(
        `--model '${label}' input '${input.name}' is ${input.type}[${input.shape.join(",")}]; ` +
          `edgeinfer needs float32 of shape [N, features]`,
      );
    }

    const features = overrides.features ?? parseFeatureMetadata(label, meta["edgeinfer.features"]);
    const deviceFeatures = parseDeviceFeatures(label, meta["edgeinfer.device_features"], features);
    const derived = deviceFeatures?.features.length ?? 0;
    const declaredWidth = typeof input.shape[1] === "number" ? input.shape[1] : undefined;
    const width = declaredWidth ?? (features && features.length + derived);
    if (width === undefined) {
      throw new UsageError(
        `--model '${label}' does not fix its number of input columns; pass --features a,b,c`,
      );
    }
    if (features && features.length + derived !== width) {
      throw new UsageError(
        `${overrides.features ? "--features" : "the model's edgeinfer.features metadata"} names ` +
          `${features.length} features${derived ? ` (and edgeinfer.device_features ${derived} more)` : ""} ` +
          `but the model input '${input.name}' has ${width} columns`,
      );
    }

    const outputNames = info.outputs.map((o) => o.name);
    const scoreOutput = overrides.scoreOutput ?? meta["edgeinfer.score"] ??
      (outputNames.length === 1 ? outputNames[0] : undefined);
    if (scoreOutput === undefined) {
      throw new UsageError(
        `--model '${label}' has several outputs (${
          outputNames.join(", ")
        }) and no edgeinfer.score metadata; ` +
          `choose one with --score-output NAME`,
      );
    }
    if (!outputNames.includes(scoreOutput)) {
      throw new UsageError(
        `score output '${scoreOutput}' is not an output of '${label}'; its outputs are: ${
          outputNames.join(", ")
        }`,
      );
    }

    let threshold = overrides.threshold;
    if (threshold === undefined && meta["edgeinfer.threshold"] !== undefined) {
      threshold = Number(meta["edgeinfer.threshold"]);
      if (!Number.isFinite(threshold)) {
        throw new UsageError(
          `--model '${label}' has edgeinfer.threshold '${meta["edgeinfer.threshold"]}', not a number; ` +
            `pass --threshold X`,
        );
      }
    }

    // The drift watch compares the event fields (and the score), not the per-device columns: those depend on
    // how long each device has been seen (they refill after every restart), which no baseline can know.
    const baseline = parseBaseline(label, meta["edgeinfer.baseline"], features);

    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: overrides.threads ?? 1,
        interOpNumThreads: 1,
        graphOptimizationLevel: "all",
      });
    } catch (err) {
      throw new UsageError(`--model '${label}' cannot be loaded by ONNX Runtime: ${(err as Error).message}`);
    }
    const name = overrides.name ?? meta["edgeinfer.name"] ?? baseName(label);
    return new Model(
      session,
      info,
      input.name,
      width,
      features,
      deviceFeatures,
      scoreOutput,
      threshold,
      name,
      overrides.version ?? meta["edgeinfer.version"] ?? "",
      sha256Hex(bytes),
      baseline,
    );
  }

  /**
   * Scores `rows` rows held at the start of `input` (row-major, `width` floats per row).
   * The caller may reuse `input` once the promise resolves.
   */
  async score(input: Float32Array, rows: number): Promise<Float32Array> {
    const data = rows * this.width === input.length ? input : input.subarray(0, rows * this.width);
    const tensor = new ort.Tensor("float32", data, [rows, this.width]);
    const results = await this.session.run({ [this.inputName]: tensor }, [this.scoreOutput]);
    const out = results[this.scoreOutput];
    if (out.data.length !== rows) {
      throw new Error(
        `model output '${this.scoreOutput}' has ${out.data.length} values for ${rows} rows (shape ` +
          `[${out.dims.join(",")}]); the score output needs one value per row`,
      );
    }
    const scores = out.data instanceof Float32Array
      ? out.data
      : Float32Array.from(out.data as ArrayLike<number>);
    return scores;
  }

  /** `car-anomaly v3`, or the name alone when the model has no version. */
  describe(): string {
    return `${this.name}${this.version ? ` v${this.version}` : ""}`;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

function parseFeatureMetadata(label: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  try {
    const parsed = JSON.parse(value);
    if (Array.isArray(parsed) && parsed.every((f) => typeof f === "string")) return parsed;
  } catch { /* reported below */ }
  throw new UsageError(
    `--model '${label}' has edgeinfer.features metadata that is not a JSON array of names; pass --features a,b,c`,
  );
}

function parseDeviceFeatures(
  label: string,
  value: string | undefined,
  features: string[] | undefined,
): DeviceFeatureSpec | undefined {
  if (value === undefined) return undefined;
  let spec: DeviceFeatureSpec;
  try {
    spec = parseDeviceFeatureSpec(value);
  } catch (err) {
    throw new UsageError(
      `--model '${label}' has edgeinfer.device_features metadata that ${(err as Error).message}`,
    );
  }
  if (features === undefined) {
    throw new UsageError(
      `--model '${label}' has edgeinfer.device_features but no edgeinfer.features: its event fields are unknown`,
    );
  }
  const clash = spec.features.find((f) => features.includes(f.name));
  if (clash) {
    throw new UsageError(
      `--model '${label}' names '${clash.name}' both as an event field and as a per-device feature`,
    );
  }
  return spec;
}

function baseName(path: string): string {
  return path.split(/[\\/]/).pop()!.replace(/\.onnx$/i, "");
}
