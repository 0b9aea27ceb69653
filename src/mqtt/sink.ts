/**
 * MQTT sink (`--sink mqtt://host:port/<topic template>`): each record's value is published at QoS 1 to the
 * template's topic (`{key}`: the record's key); send() resolves once the broker has PUBACKed every one of
 * them, so a prediction counts as durable exactly when the broker has taken responsibility for it.
 *
 * Order: one connection, publishes written in call order; after a lost connection mqtt.js sends the
 * un-PUBACKed ones again, in order, on the next one (duplicates possible: at least once).
 * Refused for good, per record (dead-lettered by the pipeline, as the Kafka sink's oversize records): a
 * key that cannot stand in a topic (empty, holding + or #), and an MQTT 5 PUBACK with an error reason
 * (e.g. "Not authorized", "Topic Name invalid"). An MQTT 3.1.1 broker cannot say no to a publish:
 * Mosquitto PUBACKs one its ACL denies and drops it.
 */
import type { MqttClient } from "mqtt";
import { RuntimeError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import { Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";
import { type MqttPublisherOptions, openMqttPublisher } from "./publisher.ts";
import type { TopicTemplate } from "./topic_template.ts";

/** The connection's settings are the publisher's (flag: "--sink" or "--dlq"); its callbacks are the sink's own. */
export interface MqttSinkOptions extends Omit<MqttPublisherOptions, "onUp" | "onDown" | "onFatal"> {
  topic: TopicTemplate;
  health?: Health;
  logger?: Logger;
}

export function createMqttSink(o: MqttSinkOptions): Sink {
  const log = o.logger ?? rootLogger;
  const health = o.health ?? new Health(undefined, log);
  const part = `MQTT sink ${o.brokerUrl}`;
  let failure: Error | undefined;
  let closed = false;
  /** Rejects the send()s waiting for PUBACKs, when the run cannot go on. */
  const waiting = new Set<(err: Error) => void>();
  const fail = (err: Error) => {
    if (closed) return;
    failure ??= err;
    health.fatal(failure);
    for (const reject of waiting) reject(failure);
    waiting.clear();
  };
  const client: MqttClient = openMqttPublisher({
    ...o,
    onUp(firstTime) {
      log.debug(
        `mqtt sink: ${firstTime ? "connected to" : "reconnected to"} ${o.brokerUrl} as ${o.clientId}`,
      );
      health.recovered(part);
    },
    onDown(reason) {
      if (!closed) health.waiting(part, reason);
    },
    onFatal: (err) => fail(new RuntimeError(`${o.flag}: ${err.message}`)),
  });
  health.onFatal(() => client.end(true)); // e.g. --give-up-after: stop redialling

  const refuses = (record: OutRecord): string | undefined => {
    const topic = o.topic.topic(record.key);
    return "problem" in topic ? topic.problem : undefined;
  };

  return {
    description: `${o.brokerUrl}/${o.topic.template}`,
    refuses,

    send(records: OutRecord[]): Promise<Refusal[]> {
      if (failure) return Promise.reject(failure);
      if (closed) return Promise.reject(new RuntimeError(`${o.flag} MQTT sink is closed`));
      const refused: Refusal[] = [];
      return new Promise((resolve, reject) => {
        let outstanding = 1; // released after the loop, so that an empty batch resolves too
        const settle = () => {
          if (--outstanding > 0) return;
          waiting.delete(reject);
          refused.sort((a, b) => a.index - b.index);
          resolve(refused);
        };
        waiting.add(reject);
        for (let index = 0; index < records.length; index++) {
          const record = records[index];
          const topic = o.topic.topic(record.key);
          if ("problem" in topic) {
            refused.push({ index, reason: topic.problem });
            continue;
          }
          outstanding++;
          client.publish(topic.topic, record.value, { qos: 1 }, (err) => {
            if (err) {
              const code = (err as { code?: unknown }).code;
              if (typeof code === "number" && code >= 0x80) {
                refused.push({
                  index,
                  reason: `the broker refused the publish to '${topic.topic}': ${err.message}`,
                });
              } else {
                // The client was ended (a fatal failure or close during a shutdown deadline).
                return reject(failure ?? new RuntimeError(`${o.flag} MQTT sink: ${err.message}`));
              }
            }
            settle();
          });
        }
        settle();
      });
    },

    async close() {
      if (closed) return;
      closed = true;
      // Normally nothing is pending (the pipeline closes sinks after the last ack). After a shutdown
      // deadline, what the broker has not PUBACKed stays unacknowledged: drop the connection.
      const force = waiting.size > 0 || !client.connected;
      await new Promise<void>((resolve) => client.end(force, {}, () => resolve()));
    },
  };
}
