/**
 * Overload: `edgeinfer run` (MQTT QoS 1 → Kafka, car model) while several simulators publish flat out,
 * sampling edgeinfer's resident memory every second. Shows that memory stays flat however much more is
 * offered than edgeinfer can score, and how fast the backlog drains afterwards.
 *
 *   deno run -A scripts/bench_overload.ts [--publishers 5] [--duration 60] [--count N] [--drain 60]
 *     --publishers N  simulator processes publishing at QoS 1 as fast as they can
 *     --duration S    how long they publish (or --count N events each)
 *     --drain S       after publishing, how long edgeinfer may keep draining before it is stopped
 *     --extra ARGS    more `edgeinfer run` flags, e.g. "--max-in-flight 8"
 * Needs the brokers (scripts/services.sh up). Prints one line per 10 s and a summary.
 */
import { parseArgs } from "node:util";

const { values: f } = parseArgs({
  args: Deno.args,
  options: {
    publishers: { type: "string", default: "5" },
    duration: { type: "string" },
    count: { type: "string" },
    drain: { type: "string", default: "60" },
    extra: { type: "string", default: "" },
  },
});
const publishers = Number(f.publishers);
const drainS = Number(f.drain);
const ROOT = new URL("../", import.meta.url).pathname;
const id = crypto.randomUUID().slice(0, 8);
const base = `overload-${id}`;
const out = `overload-out-${id}`;
const permissions = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-ffi",
  "--allow-sys",
];

function rssMb(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

// edgeinfer is started the way `deno task edgeinfer` starts it: same permissions and V8 heap flags.
const task = String(JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks?.edgeinfer ?? "")
  .split(/\s+/).filter((a) => a !== "");
if (task[0] !== "deno" || task.at(-1) !== "main.ts") throw new Error(`deno.json has no "edgeinfer" task`);
const run = new Deno.Command(Deno.execPath(), {
  args: [
    ...task.slice(1),
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    `mqtt://127.0.0.1:1883/${base}/+/sensors?client-id=edgeinfer-${base}`,
    "--key-field",
    "car",
    "--sink",
    `kafka://127.0.0.1:9092/${out}`,
    "--status-every",
    "10",
    ...f.extra.split(" ").filter((a) => a !== ""),
  ],
  cwd: ROOT,
  stdout: "null",
  stderr: "piped",
}).spawn();
let stderr = "";
const stderrDone = (async () => {
  const d = new TextDecoder();
  for await (const chunk of run.stderr) {
    const text = d.decode(chunk, { stream: true });
    stderr += text;
    for (const line of text.split("\n")) {
      if (/status:|done:|error|waiting|retrying|recovered|reconnected/.test(line)) {
        console.log(`  ${line.replace(/^edgeinfer: /, "")}`);
      }
    }
  }
})();
while (!/subscribed to/.test(stderr)) await new Promise((r) => setTimeout(r, 100));
const idleRss = rssMb(run.pid);

const bound = f.count !== undefined ? ["--count", f.count] : ["--duration", f.duration ?? "60"];
const t0 = performance.now();
const sims = Array.from({ length: publishers }, (_, i) =>
  new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissions,
      "main.ts",
      "simulate",
      "--cars",
      "1000",
      "--rate",
      "0",
      "--seed",
      String(i + 1),
      ...bound,
      "--target",
      `mqtt://127.0.0.1:1883/${base}/{car}/sensors`,
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).spawn());
// Each simulator's last line says how many events it sent and how fast; errors are passed through.
const simSent: { sent: number; seconds: number }[] = [];
const simsDone = Promise.all(sims.map(async (sim) => {
  const text = await new Response(sim.stderr).text();
  for (const line of text.split("\n")) {
    if (/error|failed|refused/i.test(line)) console.log(`  ${line.replace(/^edgeinfer: /, "")}`);
  }
  const m = /simulate: sent (\d+) events .* in ([\d.]+) s/.exec(text);
  if (m) simSent.push({ sent: Number(m[1]), seconds: Number(m[2]) });
  await sim.status;
}));
let publishing = true;
simsDone.then(() => publishing = false);

let peak = 0;
let peakWhilePublishing = 0;
let window: number[] = [];
let publishedAt = 0;
const samples: { t: number; rss: number }[] = [];
while (true) {
  await new Promise((r) => setTimeout(r, 1000));
  const t = (performance.now() - t0) / 1000;
  const rss = rssMb(run.pid);
  samples.push({ t, rss });
  peak = Math.max(peak, rss);
  if (publishing) peakWhilePublishing = Math.max(peakWhilePublishing, rss);
  window.push(rss);
  if (window.length === 10) {
    console.log(
      `t=${t.toFixed(0)} s  rss min ${Math.min(...window).toFixed(0)} max ${
        Math.max(...window).toFixed(0)
      } MB` +
        `${publishing ? "  (publishing)" : ""}`,
    );
    window = [];
  }
  if (!publishing && publishedAt === 0) publishedAt = t;
  if (publishedAt !== 0 && t - publishedAt >= drainS) break;
}
run.kill("SIGTERM");
await run.status;
await stderrDone;
const reconnects = (stderr.match(/mqtt: reconnected/g) ?? []).length;
const done = /done: (\d+) events acked.*peak (\d+) batches \/ (\d+) events in flight \(bound (\d+) \/ (\d+)\)/
  .exec(
    stderr,
  );
const firstMinute = samples.filter((s) => s.t <= 60).map((s) => s.rss);
const lastMinute = samples.filter((s) => s.t > publishedAt - 60 && s.t <= publishedAt).map((s) => s.rss);
console.log(`\noverload summary (${publishers} publishers, ${bound.join(" ")}, QoS 1, car model)`);
console.log(`  idle RSS                  ${idleRss.toFixed(0)} MB`);
console.log(
  `  peak RSS while publishing ${peakWhilePublishing.toFixed(0)} MB (peak overall ${peak.toFixed(0)} MB)`,
);
console.log(
  `  max RSS first / last minute of publishing ${Math.max(...firstMinute).toFixed(0)} / ` +
    `${Math.max(...lastMinute).toFixed(0)} MB`,
);
console.log(`  publishing lasted         ${publishedAt.toFixed(0)} s`);
const offered = simSent.reduce((a, x) => a + x.sent, 0);
const offeredRate = simSent.reduce((a, x) => a + x.sent / x.seconds, 0);
console.log(
  `  offered (published, QoS 1) ${offered} events, ${
    Math.round(offeredRate)
  }/s (sum over ${simSent.length} simulators)`,
);
console.log(`  MQTT reconnects           ${reconnects}`);
if (done) {
  console.log(
    `  events acked              ${done[1]} (${
      /done: \d+ events acked \((\d+)\/s\)/.exec(stderr)?.[1]
    }/s overall)`,
  );
  console.log(
    `  peak in flight            ${done[2]} batches / ${done[3]} events (bound ${done[4]} / ${done[5]})`,
  );
}
