/**
 * Exactly once, Kafka → Kafka: one transactional producer writes the predictions and the dead
 * letters, and commits the source's acknowledged offsets in the same Kafka transaction. A
 * read_committed consumer of the output sees each event's records once, whatever happens to the
 * process or the broker: a transaction that was not committed is aborted (by the next process with
 * the same transactional id, which fences the previous one, or by the coordinator after the
 * transaction timeout), and its events are read again from the last committed offsets.
 *
 * The pipeline decides when to commit (Pipeline's `transaction` option): it stops taking events,
 * waits until every batch in flight is written and acknowledged, then calls commit(). So every record
 * in a transaction belongs to an event whose offset the same transaction commits.
 */
import { compatibilityPartitioner, kListApis, Producer } from "@platformatic/kafka";
import { RuntimeError } from "../errors.ts";
import { Backoff, type Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";
import {
  baseClientOptions,
  describeKafkaError,
  ensureTopic,
  HeaderEncoder,
  isRetriableKafkaError,
  isSecurityFailure,
  kafkaErrorType,
  recordSerializers,
  retryKafka,
  watchTlsAlerts,
} from "./client.ts";
import type { KafkaSecurity } from "./security.ts";
import { type Compression, DEFAULT_MAX_RECORD_BYTES, oversizeReason } from "./sink.ts";
import type { GroupOffsets } from "./source.ts";

export interface KafkaTransactionsOptions {
  brokers: string[];
  clientId: string;
  /**
   * Stable across restarts of the same pipeline, different for every instance: a restarted process
   * with the same id fences its previous self (its open transaction is aborted).
   */
  transactionalId: string;
  maxRecordBytes?: number;
  /** Record batch compression (the --sink URL's compression=). */
  compression: Compression;
  health: Health;
  /** A request unanswered this long closes its connection (DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** TLS and SASL (the URL's tls=, sasl=, …); plaintext without it. */
  security?: KafkaSecurity;
}

type StringTransaction = Awaited<ReturnType<Producer<string, string, Buffer, Buffer>["beginTransaction"]>>;

/** TxnOffsetCommit answers meaning this member's generation is over (KIP-447 fencing). */
const GROUP_MOVED_ON = new Set([
  "UNKNOWN_MEMBER_ID",
  "ILLEGAL_GENERATION",
  "REBALANCE_IN_PROGRESS",
  "FENCED_INSTANCE_ID",
]);

/** Transaction (and request) timeout of the transactional producer. */
export const TRANSACTION_TIMEOUT_MS = 60_000;

/** Retry delay after CONCURRENT_TRANSACTIONS (the Java client's retry.backoff.ms is 100). */
const CONCURRENT_RETRY_MS = 20;

/**
 * @platformatic/kafka 2.12.1 sends AddPartitionsToTxn at the highest version the broker lists, v5 on
 * Kafka 4.x; v4+ is the brokers' batched verification form, and Kafka 4.4 answers a client's second
 * transaction in it with CONCURRENT_TRANSACTIONS for ever (the transaction is in CompleteCommit). v3 is
 * what clients use (the Java client, kafkajs v1): cap it in the API versions the client reads.
 */
function capAddPartitionsToTxn(producer: object): void {
  type Api = { name: string; minVersion: number; maxVersion: number };
  const target = producer as Record<symbol, (callback: (error: Error | null, apis?: Api[]) => void) => void>;
  const listApis = target[kListApis].bind(producer);
  target[kListApis] = (callback) =>
    listApis((error, apis) =>
      callback(
        error,
        apis?.map((api) =>
          api.name === "AddPartitionsToTxn" ? { ...api, maxVersion: Math.min(api.maxVersion, 3) } : api
        ),
      )
    );
}

export class KafkaTransactions {
  private readonly producer: Producer<string, string, Buffer, Buffer>;
  private readonly headerEncoder = new HeaderEncoder();
  private readonly part: string;
  private readonly backoff: Backoff;
  private transaction: Promise<StringTransaction> | undefined;
  private sends = 0;
  private sending: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closed = false;
  private readonly topics: string[] = [];
  private topicsChecked: Promise<void> | undefined;
  /**
   * Set when the broker answered TRANSACTION_ABORTABLE: the open transaction can only be aborted. Sends
   * are skipped until then; the next commit() must abort and rewind the source (see `doomed`).
   */
  doomed = false;
  /** Transactions committed (for the summary). */
  committed = 0;

  constructor(private readonly o: KafkaTransactionsOptions) {
    this.part = `Kafka transactions ${o.brokers.join(",")}`;
    this.backoff = new Backoff(o.health.retry);
    this.producer = new Producer({
      ...baseClientOptions(o.brokers, o.clientId, o.requestTimeoutMs, o.security),
      // The library also sends this as the transaction timeout (InitProducerId): the coordinator aborts a
      // transaction open longer, and the producer is then fenced. 60 s (the Java client's default) lets
      // a transaction open when the broker went away commit after an outage of up to about a minute.
      timeout: TRANSACTION_TIMEOUT_MS,
      serializers: recordSerializers,
      idempotent: true,
      transactionalId: o.transactionalId,
      // "A new producer" in InitProducerId (KIP-360). The library's default (0, 0) claims to be producer
      // 0 at epoch 0, which the coordinator answers with PRODUCER_FENCED once the id has a history (a
      // restart after a crash): exactly when fencing the previous process must work.
      producerId: -1n,
      producerEpoch: -1,
      partitioner: compatibilityPartitioner,
      autocreateTopics: true,
      compression: o.compression === "none" ? undefined : o.compression,
      // The library retries retriable failures for ever (same sequence numbers); each one is reported.
      retryDelay: (
        _client: unknown,
        _operation: string,
        _attempt: number,
        _retries: number,
        error: Error,
      ) => {
        // The previous transaction's markers are still being written (a few ms after its commit): the
        // normal case for back-to-back transactions, retried soon and not reported.
        if (kafkaErrorType(error) === "CONCURRENT_TRANSACTIONS") return CONCURRENT_RETRY_MS;
        if (!this.closed && isSecurityFailure(error)) {
          // Retried for ever by the library otherwise.
          o.health.fatal(
            new RuntimeError(
              `Kafka (exactly once): ${describeKafkaError(error, o.brokers, "(transaction)", o.security)}`,
            ),
          );
        } else if (!this.closed && isRetriableKafkaError(error)) {
          o.health.waiting(this.part, describeKafkaError(error, o.brokers, "(transaction)", o.security));
        }
        return this.backoff.next();
      },
    });
    capAddPartitionsToTxn(this.producer);
    o.health.onFatal(() => void this.producer.close().catch(() => {}));
    watchTlsAlerts(
      this.producer,
      o.security,
      o.brokers,
      (reason) => o.health.fatal(new RuntimeError(`Kafka (exactly once): ${reason}`)),
    );
  }

  /** True while a transaction is open: records were (or are being) sent since the last commit or abort. */
  get open(): boolean {
    return this.transaction !== undefined;
  }

  /** A sink whose records go into the current transaction. */
  sink(topic: string): Sink {
    this.topics.push(topic);
    return {
      description: `kafka://${this.o.brokers.join(",")}/${topic} (exactly once)`,
      send: (records) => this.send(topic, records),
      close: () => Promise.resolve(), // the transactions are closed once, by close()
    };
  }

  private current(): Promise<StringTransaction> {
    this.transaction ??= this.ready().then(() => this.producer.beginTransaction());
    return this.transaction;
  }

  /** The topics exist (or were created) before the first transaction: see ensureTopic. */
  private ready(): Promise<void> {
    this.topicsChecked ??= Promise.all(this.topics.map((topic) =>
      ensureTopic(
        this.producer,
        (attempt) =>
          retryKafka(attempt, {
            part: this.part,
            health: this.o.health,
            backoff: this.backoff,
            brokers: this.o.brokers,
            topic,
            stopped: () => this.closed || this.failure !== undefined,
          }),
        this.o.brokers,
        topic,
        "Kafka (exactly once)",
      )
    )).then(() => {});
    return this.topicsChecked;
  }

  private fail(e: unknown): Error {
    this.failure ??= this.o.health.fatalError ??
      (e instanceof RuntimeError ? e : new RuntimeError(
        `Kafka (exactly once): ${describeKafkaError(e, this.o.brokers, "(transaction)", this.o.security)}`,
      ));
    this.o.health.fatal(this.failure);
    return this.failure;
  }

  private async send(topic: string, records: OutRecord[]): Promise<Refusal[]> {
    if (this.failure) throw this.failure;
    const maxRecordBytes = this.o.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    const refused: Refusal[] = [];
    const messages = [];
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const reason = oversizeReason(r, maxRecordBytes);
      if (reason !== undefined) {
        refused.push({ index: i, reason });
        continue;
      }
      messages.push({ topic, key: r.key, value: r.value, headers: this.headerEncoder.encode(r.headers) });
    }
    if (messages.length === 0) return refused;
    this.sends++;
    // One send at a time: concurrent sends race in the library's AddPartitionsToTxn bookkeeping, which
    // Kafka 4's transaction verification answers with TRANSACTION_ABORTABLE.
    const previous = this.sending;
    let done!: () => void;
    this.sending = new Promise((resolve) => done = resolve);
    try {
      await previous;
      const transaction = await this.current();
      if (this.doomed) return refused; // aborted at the next commit; the events are read again
      await transaction.send({ messages });
      this.backoff.reset();
      this.o.health.recovered(this.part);
      return refused;
    } catch (e) {
      // The broker gave up on this transaction (e.g. a partition it could not verify): abort it at the
      // next commit and read its events again.
      if (kafkaErrorType(e) === "TRANSACTION_ABORTABLE") {
        this.doomed = true;
        return refused;
      }
      // Any other failed write: the transaction cannot commit; the run ends, the transaction is
      // aborted, and the next run reads its events again.
      throw this.fail(e);
    } finally {
      done();
      this.sends--;
    }
  }

  /**
   * Commits the open transaction with the source's acknowledged offsets. Called with no send in
   * flight (the pipeline's barrier). Does nothing when there is nothing to commit.
   */
  async commit(offsets: GroupOffsets | undefined): Promise<"committed" | "group moved on"> {
    if (this.failure) throw this.failure;
    if (this.sends > 0) throw new Error("KafkaTransactions.commit() while a send is in flight");
    const hasOffsets = offsets !== undefined && offsets.offsets.length > 0;
    if (this.transaction === undefined && !hasOffsets) return "committed";
    try {
      const transaction = await this.current();
      if (hasOffsets) {
        const { groupId, generationId, memberId, coordinatorId, topic } = offsets;
        // The library takes the group from a consumer and each offset from a consumed message
        // (it commits message.offset + 1): only these fields are read.
        await transaction.addConsumer({ groupId } as Parameters<StringTransaction["addConsumer"]>[0]);
        for (const { partition, offset } of offsets.offsets) {
          await transaction.addOffset(
            {
              topic,
              partition,
              offset: BigInt(offset) - 1n,
              metadata: { consumer: { groupId, generationId, memberId, coordinatorId } },
            } as unknown as Parameters<StringTransaction["addOffset"]>[0],
          );
        }
      }
      await transaction.commit();
      this.transaction = undefined;
      this.committed++;
      return "committed";
    } catch (e) {
      // The group moved on without us (we stalled past the session timeout, or it rebalanced while the
      // offsets were being added): these offsets are not ours to commit. Abort; the caller reads the
      // events again from the group's committed offsets.
      if (GROUP_MOVED_ON.has(kafkaErrorType(e) ?? "")) {
        await this.abort();
        return "group moved on";
      }
      throw this.fail(e);
    }
  }

  /** Aborts the open transaction, if any: read_committed consumers never see its records. */
  async abort(): Promise<void> {
    if (this.failure) throw this.failure;
    const open = this.transaction;
    this.transaction = undefined;
    this.doomed = false;
    if (open === undefined) return;
    try {
      await (await open).abort();
    } catch (e) {
      throw this.fail(e);
    }
  }

  /** Aborts an open transaction (its records are never seen by read_committed consumers) and closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const open = this.transaction;
    this.transaction = undefined;
    if (open !== undefined && !this.failure) {
      await open.then((t) => t.abort()).catch(() => {});
    }
    await this.producer.close().catch(() => {});
  }
}
