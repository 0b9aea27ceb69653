/**
 * The TCP fault proxy of the link-fault tests (Toxiproxy, started by scripts/services.sh): its two proxies,
 * "mqtt" in front of Mosquitto and "kafka" in front of Kafka's PROXIED listener (which advertises the
 * proxy's address, so a client that bootstraps through it stays behind it), and the faults the tests put
 * on them through its HTTP API.
 */
export const TOXIPROXY_API = Deno.env.get("EDGEINFER_TOXIPROXY_URL") ??
  `http://127.0.0.1:${Deno.env.get("EDGEINFER_TOXIPROXY_PORT") ?? "8474"}`;

export type ProxyName = "mqtt" | "kafka";

/** host:port a client dials to go through each proxy. */
export interface FaultProxy {
  mqtt: string;
  kafka: string;
}

async function api(method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${TOXIPROXY_API}${path}`, {
    method,
    headers: body === undefined ? undefined : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`toxiproxy ${method} ${path}: ${response.status} ${text}`);
  return text === "" ? undefined : JSON.parse(text);
}

/**
 * The proxies' addresses, or why they cannot be used (the tests then skip and print the reason).
 * Also removes any fault a failed earlier test left behind.
 */
export async function faultProxy(): Promise<FaultProxy | string> {
  try {
    const proxies = await api("GET", "/proxies") as Record<string, { listen: string }>;
    if (!proxies.mqtt || !proxies.kafka) {
      return `toxiproxy at ${TOXIPROXY_API} lacks the "mqtt"/"kafka" proxies`;
    }
    await api("POST", "/reset");
    return { mqtt: proxies.mqtt.listen, kafka: proxies.kafka.listen };
  } catch (e) {
    return `no toxiproxy at ${TOXIPROXY_API} (scripts/services.sh up starts it): ${(e as Error).message}`;
  }
}

/** Toxics in both directions; returns the function that removes them again (the link heals). */
async function addBothWays(
  proxy: ProxyName,
  name: string,
  type: string,
  attributes: Record<string, number>,
): Promise<() => Promise<void>> {
  for (const stream of ["upstream", "downstream"]) {
    await api("POST", `/proxies/${proxy}/toxics`, {
      name: `${name}-${stream}`,
      type,
      stream,
      toxicity: 1,
      attributes,
    });
  }
  return async () => {
    for (const stream of ["upstream", "downstream"]) {
      await api("DELETE", `/proxies/${proxy}/toxics/${name}-${stream}`);
    }
  };
}

/**
 * A half-open link: every byte is dropped in both directions while both TCP connections stay open (as a
 * NAT that forgot the mapping leaves them). New connections are accepted and black-holed the same way.
 */
export function blackHole(proxy: ProxyName): Promise<() => Promise<void>> {
  return addBothWays(proxy, "blackhole", "timeout", { timeout: 0 });
}

/** `ms` of added latency in each direction (a round trip gains 2 x ms). */
export function latency(proxy: ProxyName, ms: number): Promise<() => Promise<void>> {
  return addBothWays(proxy, "latency", "latency", { latency: ms, jitter: 0 });
}

/** A bandwidth cap of `kilobytesPerSecond` in each direction. */
export function bandwidth(proxy: ProxyName, kilobytesPerSecond: number): Promise<() => Promise<void>> {
  return addBothWays(proxy, "bandwidth", "bandwidth", { rate: kilobytesPerSecond });
}

/** Removes every toxic (for finally blocks). */
export async function healAll(): Promise<void> {
  await api("POST", "/reset");
}
