/**
 * Topic templates of the MQTT sink and of alerts: `cars/{key}/alerts`, where `{key}` is the record's key.
 * A key that cannot stand in a topic (empty, or holding the wildcards `+`, `#` or NUL) gives no topic: the
 * record is refused (sink) or skipped (alerts), never published to a wrong or invalid topic.
 */
import { UsageError } from "../errors.ts";

export const KEY_PLACEHOLDER = "{key}";

export class TopicTemplate {
  private readonly parts: string[];

  /** `flag` names the option in messages. Throws UsageError for a template that is no valid topic. */
  constructor(readonly template: string, flag: string) {
    if (template === "") throw new UsageError(`${flag} needs a topic, e.g. cars/{key}/predictions`);
    if (/[+#]/.test(template) || template.includes("\0") || template.startsWith("$")) {
      throw new UsageError(
        `${flag} topic '${template}' must not hold the wildcards + or # (nor start with $): ` +
          `it names the topic each record is published to, e.g. cars/{key}/predictions`,
      );
    }
    this.parts = template.split(KEY_PLACEHOLDER);
  }

  /** Whether the topic depends on the record's key. */
  get keyed(): boolean {
    return this.parts.length > 1;
  }

  /** The topic for a record with `key`, or why there is none. */
  topic(key: string | undefined): { topic: string } | { problem: string } {
    if (!this.keyed) return { topic: this.template };
    if (key === undefined || key === "") return { problem: `the record has no key for '${this.template}'` };
    if (/[+#]/.test(key) || key.includes("\0")) {
      return {
        problem: `its key ${JSON.stringify(key)} holds an MQTT wildcard (+ or #), not allowed in a topic`,
      };
    }
    return { topic: this.parts.join(key) };
  }

  /**
   * The filter matching every topic of this template (`{key}` as one level `+`), for subscriptions;
   * undefined when `{key}` is not a whole level (`cars/car-{key}`) or a key may hold '/'.
   */
  filter(): string | undefined {
    const levels = this.template.split("/");
    if (levels.some((level) => level.includes(KEY_PLACEHOLDER) && level !== KEY_PLACEHOLDER)) {
      return undefined;
    }
    return this.parts.join("+");
  }
}
