/** MQTT topic filters, and the per-device topic rights (`acl=`) of the MQTT server source. */

/** Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest; `$` topics only explicitly). */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith("$") && !filter.startsWith("$")) return false; // MQTT-4.7.2-1
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true; // also matches the parent level: "a/#" matches "a"
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Why `filter` is not a valid MQTT topic filter, or undefined if it is. */
export function filterProblem(filter: string): string | undefined {
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level === "#" && i !== levels.length - 1) return "'#' must be the last level";
    if (level !== "#" && level.includes("#")) return "'#' must be a whole level";
    if (level !== "+" && level.includes("+")) return "'+' must be a whole level";
  }
  return undefined;
}

/** The placeholder of an `acl=` template that stands for the device's identity (its login name, or its client id when it connects without one). */
export const IDENTITY_PLACEHOLDER = "{identity}";

/**
 * The topic filter a device may publish to, from an `acl=` template such as `cars/{identity}/#`, or
 * undefined when the identity cannot stand in a topic level (it holds '/', '+', '#' or is empty):
 * such a device may publish nowhere.
 */
export function deviceFilter(template: string, identity: string): string | undefined {
  if (identity === "" || /[/+#]/.test(identity) || identity.includes("\u0000")) return undefined;
  return template.replaceAll(IDENTITY_PLACEHOLDER, identity);
}

/** Whether every topic `inner` matches is matched by `outer` too (a subscription within a device's rights). */
export function filterWithin(inner: string, outer: string): boolean {
  const a = inner.split("/");
  const b = outer.split("/");
  if (a[0].startsWith("$") !== b[0].startsWith("$")) return false;
  for (let i = 0; i < b.length; i++) {
    if (b[i] === "#") return true;
    if (i >= a.length || a[i] === "#") return false;
    if (b[i] !== "+" && a[i] !== b[i]) return false;
  }
  return a.length === b.length;
}

/** Whether some topic is matched by both filters. */
export function filtersOverlap(a: string, b: string): boolean {
  const x = a.split("/");
  const y = b.split("/");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === "#" || y[i] === "#") return true;
    if (i >= x.length || i >= y.length) return false;
    if (x[i] !== "+" && y[i] !== "+" && x[i] !== y[i]) return false;
  }
  return true;
}
