/**
 * The shipped model (models/car-anomaly.onnx) against its card: a held-out fleet is generated
 * with `edgeinfer simulate` (the fleet scripts/train/train.py holds out), scored by `edgeinfer run`
 * and evaluated with scripts/train/evaluate.ts; the figures must reach those of
 * models/car-anomaly.metrics.json (which the model card quotes) within a small margin.
 */
import assert from "node:assert/strict";
import { evaluate, type LabelledFlag } from "../scripts/train/evaluate.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MARGIN = 0.01;

async function edgeinfer(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `edgeinfer ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

Deno.test("the shipped car-anomaly model scores a held-out fleet as well as its card says", async () => {
  const card = JSON.parse(await Deno.readTextFile(`${ROOT}models/car-anomaly.metrics.json`));
  const h = card.data.heldout;
  const dir = await Deno.makeTempDir({ prefix: "edgeinfer-model-test-" });
  try {
    const fleet = `${dir}/heldout.jsonl`;
    const rates = ["tire-pressure", "shock", "drive-shaft", "overheating", "firmware"]
      .flatMap((m) => [`--p-${m}`, String(h.p)]);
    await edgeinfer([
      "simulate",
      ...["--cars", String(h.cars), "--count", String(h.cars * h.readings), "--seed", String(h.seed)],
      ...["--rate", "0", "--interval", "1", "--initial-failures", String(h.initial), ...rates],
      ...["--quiet", "--target", `file:${fleet}`],
    ]);
    const records = await edgeinfer([
      "run",
      ...["--model", `${ROOT}models/car-anomaly.onnx`, "--source", `file:${fleet}`, "--format", "json"],
      ...["--sink", "-", "--passthrough", "failure_occurred,failure_modes", "--quiet"],
    ]);
    const lines = records.trimEnd().split("\n");
    assert.equal(lines.length, h.cars * h.readings, "one record per event");
    const m = evaluate(lines.map((l) => JSON.parse(l) as LabelledFlag));

    const atLeast = (what: string, got: number | null, want: number | null) => {
      if (want === null) return;
      assert.ok(got !== null && got >= want - MARGIN, `${what}: ${got} < card ${want} - ${MARGIN}`);
    };
    atLeast("overall precision", m.overall.precision, card.overall.precision);
    atLeast("overall recall", m.overall.recall, card.overall.recall);
    atLeast("overall F1", m.overall.f1, card.overall.f1);
    assert.ok(m.overall.f1! >= 0.95, `overall F1 ${m.overall.f1} below the 0.95 target`);
    for (
      const [mode, want] of Object.entries(card.modes) as [
        string,
        { f1: number | null; recall: number | null },
      ][]
    ) {
      atLeast(`${mode} F1`, m.modes[mode].f1, want.f1);
      atLeast(`${mode} recall`, m.modes[mode].recall, want.recall);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
