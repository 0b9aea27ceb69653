/**
 * Alerts back to the device (`--alerts cars/{key}/alerts`): as each batch goes to the sink, its predictions
 * (`--alerts-on all`) or only its anomalies (the default) are published at QoS 0 to the template's topic,
 * through a channel: the embedded MQTT server (devices subscribed on it) or the source's broker.
 *
 * Best effort, on purpose: published once the batch is scored, not once it is durable (the car hears of
 * its anomaly in milliseconds), never awaited, never retried. An alert to a device that is not connected
 * (or a broker that is down) is lost; the prediction in the sink is the record that counts. A redelivered
 * event may alert twice.
 */
import type { Logger } from "../log.ts";
import type { TopicTemplate } from "../mqtt/topic_template.ts";
import type { OutRecord, Sink } from "../pipeline/types.ts";

export const ALERTS_ON = ["anomalies", "all"] as const;
export type AlertsOn = typeof ALERTS_ON[number];

/** Where alerts go: publishes at QoS 0 without waiting; false when it is not connected (dropped). */
export interface AlertChannel {
  readonly description: string;
  publish(topic: string, payload: string): boolean;
  close(): Promise<void>;
}

export class Alerts {
  published = 0;
  /** Not published: the channel was down, or the key cannot stand in a topic. */
  dropped = 0;
  private warnedKey = false;

  constructor(
    private readonly template: TopicTemplate,
    private readonly on: AlertsOn,
    private readonly channel: AlertChannel,
    private readonly log: Logger,
  ) {}

  get description(): string {
    return `alerts (${this.on}) → ${this.channel.description}/${this.template.template}`;
  }

  /** Publishes the alerts of one batch's predictions; returns at once. */
  publish(records: OutRecord[]): void {
    for (let i = 0; i < records.length; i++) {
      const record = records[i];
      // With --alert-hysteresis, "anomalies" follows the device's alert: while open, and the closing reading.
      if (this.on === "anomalies" && !(record.alert ?? record.anomaly)) continue;
      const topic = this.template.topic(record.key);
      if ("problem" in topic) {
        this.dropped++;
        if (!this.warnedKey) {
          this.warnedKey = true;
          this.log.warn(`alerts: not published: ${topic.problem}; further ones are only counted`);
        }
        continue;
      }
      if (this.channel.publish(topic.topic, record.value)) this.published++;
      else this.dropped++;
    }
  }

  /** `sink` as the pipeline sees it: each batch is sent to it first, then its alerts are published. */
  wrap(sink: Sink): Sink {
    return {
      description: sink.description,
      send: (records) => {
        const durable = sink.send(records);
        this.publish(records);
        return durable;
      },
      close: () => sink.close(),
      refuses: sink.refuses && ((record) => sink.refuses!(record)),
    };
  }

  async close(): Promise<void> {
    await this.channel.close();
    this.log.info(
      `alerts: ${this.published} published` + (this.dropped > 0 ? `, ${this.dropped} dropped` : "") +
        ` (${this.on}, QoS 0, to ${this.template.template})`,
    );
  }
}
