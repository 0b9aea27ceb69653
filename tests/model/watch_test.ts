import assert from "node:assert/strict";
import { DEBOUNCE_MS, watchModelFile } from "../../src/model/watch.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("watch: a file written in several steps is reloaded once, after it stopped changing; other files are ignored", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.onnx`;
  await Deno.writeTextFile(path, "v1");
  const seen: string[] = [];
  const stop = watchModelFile(path, async () => {
    seen.push(await Deno.readTextFile(path));
  });
  try {
    await sleep(100);
    await Deno.writeTextFile(`${dir}/other.onnx`, "x");
    // A slow copy: truncate, then pieces less than the debounce apart.
    await Deno.writeTextFile(path, "");
    for (const piece of ["ab", "cd", "ef"]) {
      await sleep(DEBOUNCE_MS / 3);
      await Deno.writeTextFile(path, piece, { append: true });
    }
    await sleep(DEBOUNCE_MS * 3);
    assert.deepEqual(seen, ["abcdef"]);
    // An atomic mv into place.
    await Deno.writeTextFile(`${dir}/.model.tmp`, "v3");
    await Deno.rename(`${dir}/.model.tmp`, path);
    await sleep(DEBOUNCE_MS * 3);
    assert.deepEqual(seen, ["abcdef", "v3"]);
  } finally {
    stop();
    await Deno.remove(dir, { recursive: true });
  }
});
