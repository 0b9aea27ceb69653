/**
 * Model hot swap: a new model is loaded (its ONNX session created) while batches keep flowing, checked
 * against the running one, and put in place between two batches: each batch takes the current model once,
 * so every event is scored by exactly one model, and its prediction names that model. The model it
 * replaced is released once no batch uses it any more. A model that cannot be loaded or does not fit
 * leaves the running one in place, with a one-line reason.
 */
import { PredictionEncoder } from "../codecs/prediction.ts";
import { Model, type ModelOverrides } from "./model.ts";
import { sha256Hex } from "./wire.ts";
import type { Logger } from "../log.ts";
import { type DeviceFeatureSpec, specJson } from "../features/spec.ts";

/** `ok`: swapped; `refused`: loaded but does not fit (or failed its checksum); `failed`: could not be loaded. */
export type ReloadResult = "ok" | "refused" | "failed";

/** What a metrics object (or a test) hears of the swapper. */
export interface ModelListener {
  /** A model was put in place: the first one at start, and each swapped in. */
  modelLoaded?(model: { name: string; version: string; sha256: string }): void;
  /** The outcome of each reload attempt (SIGHUP, --watch-model, --model-source); not of an unchanged file. */
  modelReload?(result: ReloadResult, reason?: string): void;
}

/** A model with the encoder that names it in each prediction, and the batches scoring with it. */
export class ActiveModel {
  users = 0;
  retired = false;
  constructor(readonly model: Model, readonly encoder: PredictionEncoder) {}
}

/**
 * Why `candidate` cannot replace `running`, or undefined when it can: the pipeline's decoder and input
 * buffer are built for the running model's columns.
 */
export function incompatibility(
  running: { width: number; features: string[] | undefined; deviceFeatures?: DeviceFeatureSpec },
  candidate: { width: number; features: string[] | undefined; deviceFeatures?: DeviceFeatureSpec },
): string | undefined {
  if (candidate.width !== running.width) {
    return `input width ${candidate.width} differs from the running model's ${running.width}`;
  }
  const wanted = running.deviceFeatures ? specJson(running.deviceFeatures) : undefined;
  const offered = candidate.deviceFeatures ? specJson(candidate.deviceFeatures) : undefined;
  if (wanted !== offered) {
    // The per-device state is kept for the running model's definitions (restart to change them).
    return offered === undefined
      ? `it has no per-device features and the running model has (edgeinfer.device_features)`
      : wanted === undefined
      ? `it has per-device features (edgeinfer.device_features) and the running model has none`
      : `its per-device features (edgeinfer.device_features) differ from the running model's`;
  }
  if (running.features === undefined) return undefined;
  if (candidate.features === undefined) {
    return `it names no features (no edgeinfer.features metadata); the running model reads ` +
      running.features.join(",");
  }
  const differ = running.features.findIndex((f, i) => candidate.features![i] !== f);
  if (differ >= 0) {
    return `features ${candidate.features.join(",")} differ from the running model's ` +
      `${running.features.join(",")} (column ${differ + 1}: '${candidate.features[differ]}' instead of ` +
      `'${running.features[differ]}')`;
  }
  return undefined;
}

export class ModelSwapper {
  private active: ActiveModel;
  private readonly listeners: ModelListener[] = [];
  /** One reload at a time: a second request waits for the first, then looks again. */
  private reloading: Promise<unknown> = Promise.resolve();

  constructor(
    first: Model,
    private readonly overrides: ModelOverrides,
    private readonly encoderFor: (model: Model) => PredictionEncoder,
    private readonly log: Logger,
  ) {
    this.active = new ActiveModel(first, encoderFor(first));
  }

  /** The model batches are scored with now. */
  get current(): Model {
    return this.active.model;
  }

  listen(listener: ModelListener): void {
    this.listeners.push(listener);
    const m = this.active.model;
    listener.modelLoaded?.({ name: m.name, version: m.version, sha256: m.sha256 });
  }

  /** Taken by a batch before it is scored; give it back with release() once its records are encoded. */
  acquire(): ActiveModel {
    const active = this.active;
    active.users++;
    return active;
  }

  release(active: ActiveModel): void {
    active.users--;
    if (active.retired && active.users === 0) void active.model.close().catch(() => {});
  }

  /** Reloads the model file at `path` (SIGHUP, --watch-model). */
  reloadFile(path: string): Promise<ReloadResult | "unchanged"> {
    return this.serially(async () => {
      let bytes: Uint8Array;
      try {
        bytes = await Deno.readFile(path);
      } catch (err) {
        return this.outcome("failed", `cannot read ${path}: ${(err as Error).message}`);
      }
      return await this.offerNow(bytes, path, {});
    });
  }

  /** Offers a model's bytes (e.g. from the model topic), named `label` in messages. */
  offer(
    bytes: Uint8Array,
    label: string,
    identity: { name?: string; version?: string } = {},
  ): Promise<ReloadResult | "unchanged"> {
    return this.serially(() => this.offerNow(bytes, label, identity));
  }

  /** Releases the current model once no batch uses it. */
  close(): void {
    this.active.retired = true;
    if (this.active.users === 0) void this.active.model.close().catch(() => {});
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const next = this.reloading.then(work, work);
    this.reloading = next.catch(() => {});
    return next;
  }

  private async offerNow(
    bytes: Uint8Array,
    label: string,
    identity: { name?: string; version?: string },
  ): Promise<ReloadResult | "unchanged"> {
    const running = this.active.model;
    if (sha256Hex(bytes) === running.sha256) return "unchanged";
    let candidate: Model;
    try {
      // The new ONNX session is created here, while batches go on with the running one.
      candidate = await Model.fromBytes(bytes, label, { ...this.overrides, ...identity });
    } catch (err) {
      return this.outcome("failed", (err as Error).message.replace(/^--model /, ""));
    }
    const problem = incompatibility(running, candidate);
    if (problem !== undefined) {
      await candidate.close().catch(() => {});
      return this.outcome("refused", `'${label}' (${candidate.describe()}) does not fit: ${problem}`);
    }
    const previous = this.active;
    this.active = new ActiveModel(candidate, this.encoderFor(candidate));
    previous.retired = true;
    if (previous.users === 0) void previous.model.close().catch(() => {});
    this.log.info(
      `model swapped: ${previous.model.describe()} → ${candidate.describe()} (sha256 ` +
        `${candidate.sha256.slice(0, 12)}…, from ${label}); batches from now on are scored by it`,
    );
    for (const l of this.listeners) {
      l.modelLoaded?.({ name: candidate.name, version: candidate.version, sha256: candidate.sha256 });
    }
    return this.outcome("ok");
  }

  private outcome(result: ReloadResult, reason?: string): ReloadResult {
    if (reason !== undefined) {
      this.log.warn(`model reload ${result}: ${reason}; still scoring with ${this.active.model.describe()}`);
    }
    for (const l of this.listeners) l.modelReload?.(result, reason);
    return result;
  }
}
