/**
 * Throughput around a model hot swap: `edgeinfer run` drains a backlog of car events (Kafka → Kafka, car
 * model, as the `edgeinfer` task starts it), and half way the model file is replaced by a copy with another
 * version and SIGHUP sent. Events acknowledged per interval come from the status lines (--status-every).
 *
 *   deno run -A scripts/bench_swap.ts [--events 600000] [--interval 0.5] [--swap-after 4] [--extra "…"]
 * Needs the brokers (scripts/services.sh up). Prints one line per interval, the swap marked.
 */
import { parseArgs } from "node:util";
import onnxProto from "onnx-proto";

// deno-lint-ignore no-explicit-any
const { onnx } = onnxProto as any;
const { values: f } = parseArgs({
  args: Deno.args,
  options: {
    events: { type: "string", default: "600000" },
    interval: { type: "string", default: "0.5" },
    "swap-after": { type: "string", default: "4" },
    extra: { type: "string", default: "" },
  },
});
const ROOT = new URL("../", import.meta.url).pathname;
const events = Number(f.events);
const id = crypto.randomUUID().slice(0, 8);
const input = `swap-bench-${id}`;
const dir = await Deno.makeTempDir();
const model = `${dir}/car.onnx`;

/** The car model with its edgeinfer.version set to `version`. */
function withVersion(bytes: Uint8Array, version: string): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  m.metadataProps = m.metadataProps.filter((p: { key: string }) => p.key !== "edgeinfer.version");
  m.metadataProps.push({ key: "edgeinfer.version", value: version });
  return onnx.ModelProto.encode(m).finish();
}
const car = await Deno.readFile(`${ROOT}models/car-anomaly.onnx`);
await Deno.writeFile(model, withVersion(car, "1"));
const v2 = withVersion(car, "2");

console.error(`filling ${input} with ${events} car events …`);
const fill = await new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    "main.ts",
    "simulate",
    "--count",
    String(events),
    "--rate",
    "0",
    "--quiet",
    "--target",
    `kafka://127.0.0.1:9092/${input}`,
  ],
  cwd: ROOT,
  stdout: "null",
}).output();
if (!fill.success) throw new Error("simulate failed");

const task = String(JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks?.edgeinfer ?? "")
  .split(/\s+/).filter((a) => a !== "");
const child = new Deno.Command(Deno.execPath(), {
  args: [
    ...task.slice(1),
    "run",
    "--model",
    model,
    "--key-field",
    "car",
    "--source",
    `kafka://127.0.0.1:9092/${input}?group=swap-bench-${id}`,
    "--sink",
    `kafka://127.0.0.1:9092/${input}-out`,
    "--max-events",
    String(events),
    "--status-every",
    f.interval!,
    ...f.extra!.split(/\s+/).filter((a) => a !== ""),
  ],
  cwd: ROOT,
  stdout: "null",
  stderr: "piped",
}).spawn();

let start: number | undefined;
let swappedAt: number | undefined;
let last = { acked: 0, t: 0 };
const rows: { t: number; rate: number; swapped: boolean }[] = [];
const decoder = new TextDecoder();
let buffered = "";
for await (const chunk of child.stderr) {
  buffered += decoder.decode(chunk, { stream: true });
  let nl;
  while ((nl = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    const now = performance.now();
    if (/model swapped/.test(line)) {
      swappedAt = now;
      console.log(`  ${((now - start!) / 1000).toFixed(2)} s  ${line.replace(/^edgeinfer: /, "")}`);
    } else if (/model reload/.test(line)) console.log(line);
    const m = /status: (\d+) events acked/.exec(line);
    if (!m) continue;
    const acked = Number(m[1]);
    if (start === undefined && acked > 0) {
      start = now;
      last = { acked, t: now };
      setTimeout(async () => {
        await Deno.writeFile(`${model}.tmp`, v2);
        await Deno.rename(`${model}.tmp`, model);
        child.kill("SIGHUP");
        console.log(`  ${((performance.now() - start!) / 1000).toFixed(2)} s  SIGHUP sent`);
      }, Number(f["swap-after"]) * 1000);
      continue;
    }
    if (start === undefined) continue;
    const rate = (acked - last.acked) / ((now - last.t) / 1000);
    rows.push({ t: (now - start) / 1000, rate, swapped: swappedAt !== undefined && swappedAt > last.t });
    console.log(
      `${((now - start) / 1000).toFixed(2).padStart(6)} s ${String(Math.round(rate)).padStart(8)} events/s` +
        (swappedAt !== undefined && swappedAt > last.t && swappedAt <= now
          ? "   ← swap in this interval"
          : ""),
    );
    last = { acked, t: now };
  }
}
await child.status;
const full = rows.filter((r) => r.rate > 0).slice(0, -1); // the last interval is cut by the end
const swapRow = full.findIndex((r) => r.swapped);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const before = full.slice(1, Math.max(1, swapRow)).map((r) => r.rate);
const after = full.slice(swapRow + 1).map((r) => r.rate);
console.log(
  `mean before the swap ${Math.round(mean(before))}/s, the swap's interval ${
    Math.round(full[swapRow]?.rate ?? 0)
  }/s, after ${Math.round(mean(after))}/s`,
);
await Deno.remove(dir, { recursive: true });
