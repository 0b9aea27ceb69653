import { fileURLToPath } from "node:url";

/** The folder holding main.ts: the project root under `deno run`, the embedded root in a compiled binary. */
const APP_ROOT = new URL("../../", import.meta.url);

/**
 * Where to read a --model path from. A path that exists as given wins. Otherwise a relative path
 * is looked up beside the program: a compiled edgeinfer carries models/ inside it (deno compile
 * --include models), so `--model models/car-anomaly.onnx` works from any working directory.
 */
export function locateModel(path: string): string {
  if (exists(path) || path.startsWith("/")) return path;
  const bundled = fileURLToPath(new URL(path.replaceAll("\\", "/"), APP_ROOT));
  return exists(bundled) ? bundled : path;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
