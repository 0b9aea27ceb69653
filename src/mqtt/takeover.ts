/**
 * Takeover within an MQTT 5 shared subscription: when one instance of a share group disappears, a
 * surviving instance resumes its persistent session, so what the broker queued for the lost instance is
 * scored now instead of when (if ever) that instance returns.
 *
 * Why: a broker delivers each message of `$share/<group>/<filter>` to one session of the group, and keeps
 * queueing a disconnected member's share in its persistent session until the member returns (measured on
 * Mosquitto 2.0.11: a survivor scored ~5,000 of ~10,000 events offered while its peer was down). The
 * broker never hands those messages to another member: when the session ends (expiry), they are dropped.
 * So session expiry would trade loss for takeover; this trades nothing.
 *
 * How: every member registers an MQTT 5 Will message on `edgeinfer/takeover/<group>/<hash of the filter>`
 * carrying its client id, with a Will Delay of `takeover=` seconds, and subscribes to that topic (QoS 0,
 * so it is not queued for an offline member). A member that vanishes without a clean DISCONNECT (killed,
 * its link dead for 1.5 × keepalive) or stops on purpose (it disconnects with reason 0x04, "with Will")
 * has its will published once the delay passes, unless it reconnected before. A member that receives it
 * connects with the lost member's client id (clean start off: the broker hands it that session, with its
 * queue and its in-flight messages) and scores that share too. When the owner comes back, the broker
 * gives the session back to it and closes the adopter's connection (a session takeover, no will); the
 * adopter never redials an adopted session: if its own link breaks, the will registered on it brings the
 * session to whichever member is alive. Two adopters at once end the same way: the later one keeps it.
 * What was delivered to the adopter and not yet acknowledged is delivered again to the next holder
 * (duplicates, never loss).
 */

/** The default Will Delay (`takeover=`): a restart within it keeps the session with its owner. */
export const DEFAULT_TAKEOVER_DELAY_S = 5;

/** The topic the members of one shared subscription announce their departure on. */
export function takeoverTopic(shareGroup: string, topicFilter: string): string {
  // Wildcards may not appear in a topic name: the filter is named by its FNV-1a hash.
  let hash = 0x811c9dc5;
  for (const ch of topicFilter) hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return `edgeinfer/takeover/${shareGroup}/${hash.toString(16).padStart(8, "0")}`;
}

/** mqtt.js `will` option: published `delayS` seconds after `clientId` vanished, naming it. */
export function takeoverWill(topic: string, clientId: string, delayS: number) {
  return {
    topic,
    payload: new TextEncoder().encode(clientId) as unknown as Buffer,
    qos: 0 as const,
    retain: false,
    properties: { willDelayInterval: delayS },
  };
}
