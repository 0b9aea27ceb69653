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
import { compatibilityPartitioner, Producer, stringSerializers } from "@platformatic/kafka";
import { RuntimeError } from "../errors.ts";
import { Backoff, type Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";
import { baseClientOptions, describeKafkaError, isRetriableKafkaError } from "./client.ts";
import { DEFAULT_MAX_RECORD_BYTES } from "./sink.ts";
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
  health: Health;
}

type StringTransaction = Awaited<ReturnType<Producer<string, string, string, string>["beginTransaction"]>>;

function approxSize(r: OutRecord): number {
  let n = 32 + r.value.length + (r.key?.length ?? 0);
  for (const k in r.headers) n += k.length + r.headers[k].length + 4;
  return n;
}

export class KafkaTransactions {
  private readonly producer: Producer<string, string, string, string>;
  private readonly part: string;
  private readonly backoff: Backoff;
  private transaction: Promise<StringTransaction> | undefined;
  private sends = 0;
  private sending: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closed = false;
  /** Transactions committed (for the summary). */
  committed = 0;

  constructor(private readonly o: KafkaTransactionsOptions) {
    this.part = `Kafka transactions ${o.brokers.join(",")}`;
    this.backoff = new Backoff(o.health.retry);
    this.producer = new Producer({
      ...baseClientOptions(o.brokers, o.clientId),
      serializers: stringSerializers,
      idempotent: true,
      transactionalId: o.transactionalId,
      partitioner: compatibilityPartitioner,
      autocreateTopics: true,
      // The library retries retriable failures for ever (same sequence numbers); each one is reported.
      retryDelay: (
        _client: unknown,
        _operation: string,
        _attempt: number,
        _retries: number,
        error: Error,
      ) => {
        if (!this.closed && isRetriableKafkaError(error)) {
          o.health.waiting(this.part, describeKafkaError(error, o.brokers, "(transaction)"));
        }
        return this.backoff.next();
      },
    });
    o.health.onFatal(() => void this.producer.close().catch(() => {}));
  }

  /** A sink whose records go into the current transaction. */
  sink(topic: string): Sink {
    return {
      description: `kafka://${this.o.brokers.join(",")}/${topic} (exactly once)`,
      send: (records) => this.send(topic, records),
      close: () => Promise.resolve(), // the transactions are closed once, by close()
    };
  }

  private current(): Promise<StringTransaction> {
    this.transaction ??= this.producer.beginTransaction();
    return this.transaction;
  }

  private fail(e: unknown): Error {
    this.failure ??= this.o.health.fatalError ??
      (e instanceof RuntimeError ? e : new RuntimeError(
        `Kafka (exactly once): ${describeKafkaError(e, this.o.brokers, "(transaction)")}`,
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
      const size = approxSize(r);
      if (size > maxRecordBytes) {
        refused.push({
          index: i,
          reason: `record of ~${size} bytes exceeds the Kafka sink's limit of ${maxRecordBytes} ` +
            `(max-record-bytes; Kafka's max.message.bytes)`,
        });
        continue;
      }
      messages.push({ topic, key: r.key, value: r.value, headers: r.headers });
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
      await transaction.send({ messages });
      this.backoff.reset();
      this.o.health.recovered(this.part);
      return refused;
    } catch (e) {
      // A transaction with a failed write cannot commit: the run ends, the transaction is aborted,
      // and the next run reads its events again.
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
  async commit(offsets: GroupOffsets | undefined): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.sends > 0) throw new Error("KafkaTransactions.commit() while a send is in flight");
    const hasOffsets = offsets !== undefined && offsets.offsets.length > 0;
    if (this.transaction === undefined && !hasOffsets) return;
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
