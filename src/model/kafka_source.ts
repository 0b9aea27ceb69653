/**
 * --model-source kafka://host:port/<topic>: models delivered over a compacted topic (wire format:
 * src/model/wire.ts). The topic is read from the beginning, on all its partitions, and followed for as
 * long as the run lasts; each good model newer than the running one is handed to the swapper, and kept in
 * --model-cache DIR once it is in place, so that a start without uplink still has it.
 *
 * The reader is a consumer of a throwaway group of its own (one member, so it is assigned every
 * partition; nothing is committed): @platformatic/kafka consumes only as a group member.
 */
import { Consumer, MessagesStreamModes } from "@platformatic/kafka";
import { parseEndpoint } from "../config/endpoint.ts";
import { integerIn, readQuery } from "../config/query.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  baseClientOptions,
  DEFAULT_REQUEST_TIMEOUT_MS,
  describeKafkaError,
  isRetriableKafkaError,
  isSecurityFailure,
} from "../kafka/client.ts";
import { describeSecurity, type KafkaSecurity, kafkaSecurity, SECURITY_PARAMS } from "../kafka/security.ts";
import { Model, type ModelOverrides } from "./model.ts";
import type { ModelSwapper } from "./swap.ts";
import { MODEL_HEADER, ModelAssembler, type ModelEnvelope, sha256Hex } from "./wire.ts";

/** How long a start waits to read the model topic to its end before it starts with what it has. */
export const START_WAIT_MS = 5000;
const RETRY_MS = 5000;

interface Delivered {
  envelope: ModelEnvelope;
  bytes: Uint8Array;
}

const utf8 = new TextDecoder();

export class KafkaModelSource {
  private readonly brokers: string[];
  private readonly topic: string;
  private readonly clientId: string;
  private readonly requestTimeoutMs: number;
  private readonly security: KafkaSecurity;
  /** The newest good model read from the topic. */
  private newest: Delivered | undefined;
  /** The `published` of the model in place (from the topic or the cache), 0 for --model. */
  private appliedPublished = 0;
  private swapper: ModelSwapper | undefined;
  private offering: Promise<unknown> = Promise.resolve();
  private consumer: Consumer | undefined;
  private stopped = false;
  private outage = false;
  /** A refusal (login, certificate, authorization) at the first attempt: the start fails with it. */
  private refusal: RuntimeError | undefined;
  private lastFailure: string | undefined;
  /** Until start() has chosen the first model. */
  private starting = true;
  /** Settles once: true when the topic was read to its end, false when the first attempt failed. */
  private settle!: (reachedEnd: boolean) => void;
  private readonly started = new Promise<boolean>((resolve) => this.settle = resolve);
  private loop: Promise<void> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private wakeRetry: (() => void) | undefined;

  constructor(
    url: string,
    private readonly cacheDir: string | undefined,
    private readonly log: Logger,
  ) {
    const flag = "--model-source";
    const endpoint = parseEndpoint(flag, url);
    if (endpoint.kind !== "kafka") {
      throw new UsageError(
        `${flag} must be kafka://host:port/<topic> (the topic 'edgeinfer model publish' writes)`,
      );
    }
    const q = readQuery(flag, endpoint.params, ["client-id", "request-timeout-ms", ...SECURITY_PARAMS]);
    this.brokers = endpoint.brokers;
    this.topic = endpoint.topic;
    this.clientId = q.get("client-id") ?? "edgeinfer-models";
    this.requestTimeoutMs = integerIn(flag, "request-timeout-ms", q.get("request-timeout-ms"), {
      min: 1000,
      max: 300_000,
      fallback: DEFAULT_REQUEST_TIMEOUT_MS,
      meaning: "milliseconds a Kafka request may go unanswered before the connection is declared dead",
    });
    this.security = kafkaSecurity(flag, q);
  }

  get description(): string {
    return `kafka://${this.brokers.join(",")}/${this.topic}${describeSecurity(this.security)}`;
  }

  /**
   * The first model of a run: the topic's newest good one when the topic can be read to its end within
   * START_WAIT_MS; else the cached one; else the --model file. The topic is followed from then on.
   */
  async start(modelPath: string | undefined, overrides: ModelOverrides): Promise<Model> {
    this.loop = this.follow();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reached = await Promise.race([
      this.started,
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), START_WAIT_MS)),
    ]);
    clearTimeout(timer);
    this.starting = false;
    if (this.refusal) {
      await this.close();
      throw this.refusal;
    }
    if (this.newest) {
      const { envelope, bytes } = this.newest;
      try {
        const model = await Model.fromBytes(bytes, this.label(envelope), {
          ...overrides,
          name: envelope.name,
          version: envelope.version,
        });
        this.appliedPublished = envelope.published;
        this.log.info(
          `model ${model.describe()} from ${this.description} (sha256 ${envelope.sha256.slice(0, 12)}…)`,
        );
        await this.writeCache(this.newest);
        return model;
      } catch (err) {
        this.log.warn(`model from ${this.description} cannot be loaded, ignored: ${(err as Error).message}`);
      }
    }
    const why = reached
      ? `${this.description} holds no good model`
      : `${this.description} cannot be read (${
        this.lastFailure ?? `no answer within ${START_WAIT_MS / 1000} s`
      })`;
    const cached = await this.readCache();
    if (cached) {
      try {
        const model = await Model.fromBytes(cached.bytes, `${this.cacheDir}/model.onnx`, {
          ...overrides,
          name: cached.envelope.name,
          version: cached.envelope.version,
        });
        this.appliedPublished = cached.envelope.published;
        this.log.warn(`${why}: starting with the cached model ${model.describe()} from ${this.cacheDir}`);
        return model;
      } catch (err) {
        this.log.warn(
          `the cached model in ${this.cacheDir} cannot be loaded, ignored: ${(err as Error).message}`,
        );
      }
    }
    if (modelPath === undefined) {
      throw new UsageError(
        `${why} and ${
          this.cacheDir ? `--model-cache ${this.cacheDir} holds no good model` : "no --model-cache"
        }: ` +
          `give --model PATH as the first model`,
      );
    }
    this.log.warn(`${why}: starting with --model ${modelPath}`);
    return await Model.load(modelPath, overrides);
  }

  /** From now on, each newer good model from the topic is offered to `swapper`. */
  attach(swapper: ModelSwapper): void {
    this.swapper = swapper;
    this.offerNewest();
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.settle(false);
    clearTimeout(this.retryTimer);
    this.wakeRetry?.();
    await this.consumer?.close(true).catch(() => {});
    await this.loop;
    await this.offering;
  }

  private label(e: ModelEnvelope): string {
    return `${this.description} ${e.name} v${e.version}`;
  }

  private offerNewest(): void {
    const swapper = this.swapper;
    const newest = this.newest;
    if (!swapper || !newest || newest.envelope.published <= this.appliedPublished) return;
    this.appliedPublished = newest.envelope.published;
    const { envelope, bytes } = newest;
    this.offering = this.offering.then(async () => {
      const result = await swapper.offer(bytes, this.label(envelope), {
        name: envelope.name,
        version: envelope.version,
      });
      if (result === "ok" || result === "unchanged") await this.writeCache(newest);
    });
  }

  /** Reads the topic from its beginning and follows it; a failure is retried (the whole topic again). */
  private async follow(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.readOnce();
      } catch (err) {
        if (this.stopped) break;
        const reason = describeKafkaError(err, this.brokers, this.topic, this.security);
        // A refused login or certificate is a mistake to fix, not an outage: at start it ends the run.
        if (this.starting && (isSecurityFailure(err) || !isRetriableKafkaError(err))) {
          // Reported by start(), which fails with it.
          this.refusal ??= new RuntimeError(`--model-source ${this.description}: ${reason}`);
          this.settle(false);
          break;
        }
        this.lastFailure = reason;
        if (!this.outage) {
          this.log.warn(`model source ${this.description}: ${reason}; retrying every ${RETRY_MS / 1000} s`);
        }
        this.outage = true;
        this.settle(false);
      }
      await this.consumer?.close(true).catch(() => {});
      this.consumer = undefined;
      if (!this.stopped) {
        await new Promise<void>((resolve) => {
          this.wakeRetry = resolve;
          this.retryTimer = setTimeout(resolve, RETRY_MS);
        });
      }
    }
  }

  private async readOnce(): Promise<void> {
    const consumer = this.consumer = new Consumer({
      ...baseClientOptions(this.brokers, this.clientId, this.requestTimeoutMs, this.security),
      groupId: `edgeinfer-models-${crypto.randomUUID()}`,
      autocommit: false,
      maxWaitTime: 500,
      retries: 1,
    });
    const offsets = await consumer.listOffsets({ topics: [this.topic] });
    const ends = offsets.get(this.topic) ?? [];
    const pending = new Map<number, bigint>();
    ends.forEach((end, partition) => {
      if (end > 0n) pending.set(partition, end - 1n);
    });
    const assembler = new ModelAssembler();
    const reachedEnd = () => {
      for (const line of assembler.incomplete()) {
        this.log.warn(`model source: ${line}, ignored until complete`);
      }
      this.settle(true);
    };
    if (pending.size === 0) reachedEnd();
    const stream = await consumer.consume({ topics: [this.topic], mode: MessagesStreamModes.EARLIEST });
    if (this.outage) this.log.info(`model source ${this.description}: reachable again`);
    this.outage = false;
    for await (const m of stream) {
      if (this.stopped) break;
      const key = m.key == null ? "" : utf8.decode(m.key);
      const assembled = assembler.add(key, m.value, headerValue(m.headers, MODEL_HEADER));
      if (assembled.kind === "ignored") this.log.warn(`model source: ${assembled.reason}; ignored`);
      if (assembled.kind === "complete") {
        if (!this.newest || assembled.envelope.published >= this.newest.envelope.published) {
          this.newest = { envelope: assembled.envelope, bytes: assembled.bytes };
          this.offerNewest();
        }
      }
      const last = pending.get(m.partition);
      if (last !== undefined && m.offset >= last) {
        pending.delete(m.partition);
        if (pending.size === 0) reachedEnd();
      }
    }
  }

  private async writeCache(d: Delivered): Promise<void> {
    if (this.cacheDir === undefined) return;
    try {
      await Deno.mkdir(this.cacheDir, { recursive: true });
      // Model first, then its description: each replaced atomically (rename).
      await Deno.writeFile(`${this.cacheDir}/model.onnx.tmp`, d.bytes);
      await Deno.rename(`${this.cacheDir}/model.onnx.tmp`, `${this.cacheDir}/model.onnx`);
      await Deno.writeTextFile(`${this.cacheDir}/model.json.tmp`, JSON.stringify(d.envelope));
      await Deno.rename(`${this.cacheDir}/model.json.tmp`, `${this.cacheDir}/model.json`);
    } catch (err) {
      this.log.warn(`cannot keep the model in --model-cache ${this.cacheDir}: ${(err as Error).message}`);
    }
  }

  private async readCache(): Promise<Delivered | undefined> {
    if (this.cacheDir === undefined) return undefined;
    let envelope: ModelEnvelope;
    let bytes: Uint8Array;
    try {
      envelope = JSON.parse(await Deno.readTextFile(`${this.cacheDir}/model.json`));
      bytes = await Deno.readFile(`${this.cacheDir}/model.onnx`);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.log.warn(`--model-cache ${this.cacheDir} cannot be read, ignored: ${(err as Error).message}`);
      }
      return undefined;
    }
    if (sha256Hex(bytes) !== envelope.sha256) {
      this.log.warn(
        `--model-cache ${this.cacheDir}: model.onnx does not match its sha256 in model.json, ignored`,
      );
      return undefined;
    }
    return { envelope, bytes };
  }
}

/** A header's value as text; header keys are Buffers, so they are compared by content. */
function headerValue(headers: Map<unknown, unknown>, name: string): string | undefined {
  for (const [k, v] of headers) {
    if (String(k) === name) return v == null ? undefined : String(v);
  }
  return undefined;
}
