/** `edgeinfer model publish FILE --to kafka://…/<topic>`: publishes a model for --model-source. */
import { Admin, ProduceAcks, Producer, stringSerializer } from "@platformatic/kafka";
import { Buffer } from "node:buffer";
import { parseEndpoint } from "../config/endpoint.ts";
import { integerIn, readQuery } from "../config/query.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import { baseClientOptions, describeKafkaError, kafkaErrorType } from "../kafka/client.ts";
import { kafkaSecurity, SECURITY_PARAMS } from "../kafka/security.ts";
import { locateModel } from "../model/locate.ts";
import { readOnnxInfo } from "../model/onnx_file.ts";
import { chunkModel, DEFAULT_CHUNK_BYTES, MODEL_HEADER, sha256Hex } from "../model/wire.ts";
import { parseFlags } from "./args.ts";

export const MODEL_HELP = `edgeinfer model: publish models for 'edgeinfer run --model-source'

Usage: edgeinfer model publish FILE --to kafka://host:port/<topic> [--name N] [--version V]

  --to URL        the model topic; created compacted (cleanup.policy=compact, 1 partition) if missing.
                  Parameters: chunk-bytes=N (largest chunk per record, default ${DEFAULT_CHUNK_BYTES}; keep it
                  under the topic's max.message.bytes), client-id=, request-timeout-ms=, and tls=true, ca=,
                  cert=, key=, sasl=, username=, password-file= as for run's Kafka URLs
  --name N        the model's name (default: its edgeinfer.name metadata, else the file name)
  --version V     the model's version (default: its edgeinfer.version metadata; required without it)

Every gateway running with --model-source on that topic swaps the model in as it arrives (when it reads
the same features), and predictions name the version published here.

Example
  edgeinfer model publish models/car-anomaly.onnx --to kafka://127.0.0.1:9092/edgeinfer-models --version 2
`;

export async function modelCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags("model", argv, {
    to: { type: "string" },
    name: { type: "string" },
    version: { type: "string" },
  }, true);
  const [action, file, ...extra] = positionals;
  if (action !== "publish") {
    throw new UsageError(
      `model needs an action: publish (see 'edgeinfer model --help'), got '${action ?? ""}'`,
    );
  }
  if (file === undefined || extra.length > 0) {
    throw new UsageError("model publish needs exactly one FILE (see 'edgeinfer model --help')");
  }
  if (values.to === undefined) throw new UsageError("model publish needs --to kafka://host:port/<topic>");
  const endpoint = parseEndpoint("--to", values.to);
  if (endpoint.kind !== "kafka") throw new UsageError("--to must be kafka://host:port/<topic>");
  const q = readQuery("--to", endpoint.params, [
    "chunk-bytes",
    "client-id",
    "request-timeout-ms",
    ...SECURITY_PARAMS,
  ]);
  const chunkBytes = integerIn("--to", "chunk-bytes", q.get("chunk-bytes"), {
    min: 1,
    max: 100_000_000,
    fallback: DEFAULT_CHUNK_BYTES,
    meaning: "the largest piece of the model per record",
  });
  const security = kafkaSecurity("--to", q);

  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(locateModel(file));
  } catch (err) {
    throw new UsageError(`model publish: '${file}' cannot be read: ${(err as Error).message}`);
  }
  let metadata: Record<string, string>;
  try {
    metadata = readOnnxInfo(bytes).metadata;
  } catch (err) {
    throw new UsageError(`model publish: '${file}' is not an ONNX model (${(err as Error).message})`);
  }
  const name = values.name ?? metadata["edgeinfer.name"] ??
    file.split(/[\\/]/).pop()!.replace(/\.onnx$/i, "");
  const version = values.version ?? metadata["edgeinfer.version"];
  if (version === undefined || version === "") {
    throw new UsageError(`model publish: '${file}' has no edgeinfer.version metadata: give --version V`);
  }
  for (const [flag, value] of [["--name", name], ["--version", version]]) {
    if (value.includes("/")) throw new UsageError(`model publish: ${flag} '${value}' may not contain '/'`);
  }

  const { brokers, topic } = endpoint;
  const options = baseClientOptions(
    brokers,
    q.get("client-id") ?? "edgeinfer-publish",
    q.get("request-timeout-ms") === undefined ? undefined : Number(q.get("request-timeout-ms")),
    security,
  );
  const failed = (what: string, err: unknown) =>
    new RuntimeError(`model publish: ${what}: ${describeKafkaError(err, brokers, topic, security)}`);
  const admin = new Admin({ ...options, retries: 2 });
  try {
    await admin.createTopics({
      topics: [topic],
      partitions: 1,
      replicas: -1,
      configs: [{ name: "cleanup.policy", value: "compact" }],
    });
  } catch (err) {
    if (kafkaErrorType(err) !== "TOPIC_ALREADY_EXISTS") throw failed(`creating topic ${topic}`, err);
  } finally {
    await admin.close().catch(() => {});
  }

  const chunks = chunkModel(bytes, { name, version, chunkBytes, published: Date.now() });
  const producer = new Producer({
    ...options,
    serializers: {
      key: stringSerializer,
      value: (b?: Buffer) => b,
      headerKey: stringSerializer,
      headerValue: stringSerializer,
    },
    idempotent: true,
    acks: ProduceAcks.ALL,
    retries: 2,
  });
  try {
    // One chunk per request, in order: a request stays under the broker's message limit.
    for (const chunk of chunks) {
      await producer.send({
        messages: [{
          topic,
          key: chunk.key,
          value: Buffer.from(chunk.value.buffer, chunk.value.byteOffset, chunk.value.byteLength),
          headers: new Map([[MODEL_HEADER, chunk.header]]),
        }],
      });
    }
  } catch (err) {
    throw failed(`publishing to ${topic}`, err);
  } finally {
    await producer.close().catch(() => {});
  }
  console.log(
    `published model ${name} v${version} (${bytes.length} bytes, sha256 ${sha256Hex(bytes)}) to ` +
      `kafka://${brokers.join(",")}/${topic} in ${chunks.length} chunk${chunks.length === 1 ? "" : "s"}`,
  );
}
