/**
 * Scale-out on an MQTT 5 shared subscription, on the real Mosquitto: two `edgeinfer run` instances share
 * `$share/<group>/<filter>`, one is killed with SIGKILL mid-stream, and the survivor takes over the lost
 * member's session (src/mqtt/takeover.ts): what the broker queued for it is scored, nothing is lost. Then
 * the killed instance comes back and gets its session back.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import { MQTT_URL } from "./brokers.ts";

const RATE = 500; // events/s offered
const TAKEOVER_S = 2; // takeover= (the will delay)
/** Kill → takeover: the will delay, Mosquitto's ~1 s will timer, the adopter's connect; with slack. */
const TAKEOVER_BOUND_MS = (TAKEOVER_S + 3) * 1000;

/** Ids in a file sink's predictions (one JSON record per line). */
async function idsIn(path: string): Promise<number[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return text.split("\n").filter((l) => l.endsWith("}")).map((l) => JSON.parse(l).id as number);
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Publishes {"id":i,"a":i} at RATE/s (QoS 1, 10 devices) until stopped; `published` counts the acked ones. */
function publisher(prefix: string) {
  const client = mqtt.connect(MQTT_URL, { clientId: `${prefix.replaceAll("/", "-")}-pub`, clean: true });
  let next = 0;
  let published = 0;
  const timer = setInterval(() => {
    for (let n = 0; n < RATE / 20; n++) {
      const id = next++;
      client.publish(`${prefix}/car${id % 10}/s`, JSON.stringify({ id, a: id }), { qos: 1 }, (err) => {
        if (!err) published++;
      });
    }
  }, 50);
  return {
    get sent() {
      return next;
    },
    get published() {
      return published;
    },
    async stop() {
      clearInterval(timer);
      await waitFor("the publisher's PUBACKs", () => published === next, 10_000);
      await client.endAsync();
    },
  };
}

/** Deletes the sessions a test left on the broker (clean start, session expiry 0). */
async function dropSessions(clientIds: string[]) {
  for (const clientId of clientIds) {
    const c = await mqtt.connectAsync(MQTT_URL, { clientId, clean: true, protocolVersion: 5 });
    await c.endAsync();
  }
}

/**
 * Two members; `stop` ends member a mid-stream (SIGKILL: a crash; SIGTERM: scale-in, a clean stop that
 * leaves "with Will"); b must take over a's session within the bound and score everything. After a
 * SIGKILL, a comes back and gets its session back.
 */
async function failover(stop: "SIGKILL" | "SIGTERM") {
  const run = crypto.randomUUID().slice(0, 8);
  const prefix = `edgeinfer-failover/${run}`;
  const dir = await Deno.makeTempDir({ prefix: "edgeinfer-failover-" });
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const ids = { a: `ei-fo-${run}-a`, b: `ei-fo-${run}-b` };
  const start = (name: "a" | "b") =>
    spawnCli([
      "run",
      "--model",
      model,
      "--source",
      `${MQTT_URL}/${prefix}/+/s?share=g${run}&client-id=${ids[name]}&takeover=${TAKEOVER_S}`,
      "--sink",
      `file:${dir}/${name}.out`,
      "--linger-ms",
      "20",
    ]);
  const children: RunningCli[] = [];
  let pub: ReturnType<typeof publisher> | undefined;
  try {
    const a = start("a");
    const b = start("b");
    children.push(a, b);
    await a.waitForStderr(/subscribed to/);
    await b.waitForStderr(/subscribed to/);
    pub = publisher(prefix); // once the shared subscription exists: nothing published before is queued
    // Both members score their share before the fault.
    await waitFor(
      "predictions from both members",
      async () => (await idsIn(`${dir}/a.out`)).length > 200 && (await idsIn(`${dir}/b.out`)).length > 200,
      20_000,
    );

    a.child.kill(stop);
    const killedAt = Date.now();
    const sentAtKill = pub.sent;
    assert.equal(await a.exit(), stop === "SIGTERM" ? 0 : 137);
    await b.waitForStderr(new RegExp(`took over the session of ${ids.a}`), TAKEOVER_BOUND_MS + 5000);
    const takeoverMs = Date.now() - killedAt;
    // The survivor alone scores everything offered after the kill, its peer's queued share included.
    const caughtUpTarget = pub.sent;
    await waitFor("the survivor to score every event offered after the kill", async () => {
      const seen = new Set(await idsIn(`${dir}/b.out`));
      for (let id = sentAtKill + RATE; id < caughtUpTarget; id++) if (!seen.has(id)) return false;
      return true;
    }, 30_000);
    const caughtUpMs = Date.now() - killedAt;
    console.log(
      `takeover: session resumed ${takeoverMs} ms after ${stop} (takeover=${TAKEOVER_S}); ` +
        `survivor caught up with ${RATE} events/s ${caughtUpMs} ms after it`,
    );
    assert.ok(takeoverMs < TAKEOVER_BOUND_MS, `takeover took ${takeoverMs} ms (bound ${TAKEOVER_BOUND_MS})`);

    if (stop === "SIGKILL") {
      // The killed member returns: the broker gives its session back, the survivor lets go of it.
      const a2 = start("a");
      children.push(a2);
      await b.waitForStderr(new RegExp(`let go of the session of ${ids.a}`), 15_000);
      await waitFor("the returned member to score again", async () => {
        const before = (await idsIn(`${dir}/a.out`)).filter((id) => id > caughtUpTarget).length;
        return before > 100;
      }, 20_000);
    }

    await pub.stop();
    const total = pub.sent;
    assert.equal(pub.published, total);
    const missing = async () => {
      const seen = new Set([...(await idsIn(`${dir}/a.out`)), ...(await idsIn(`${dir}/b.out`))]);
      const out: number[] = [];
      for (let id = 0; id < total; id++) if (!seen.has(id)) out.push(id);
      return out;
    };
    await waitFor(
      "every event to be scored by one of the members",
      async () => (await missing()).length === 0,
      30_000,
    )
      .catch(async (e) => {
        const m = await missing();
        throw new Error(`${e.message}: ${m.length} of ${total} missing, e.g. ${m.slice(0, 10).join(",")}`);
      });
    const scored = (await idsIn(`${dir}/a.out`)).length + (await idsIn(`${dir}/b.out`)).length;
    console.log(`${total} events offered, ${scored} predictions (${scored - total} duplicates), none lost`);
  } finally {
    await pub?.stop().catch(() => {});
    for (const child of children) {
      if (child.exited === undefined) child.child.kill("SIGKILL");
      await child.exit();
    }
    await dropSessions([ids.a, ids.b]);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("MQTT shared subscription: a SIGKILLed member's session is taken over by the survivor, nothing lost", () =>
  failover("SIGKILL"));

Deno.test("MQTT shared subscription: a member stopped with SIGTERM hands its session over (scale-in)", () =>
  failover("SIGTERM"));
