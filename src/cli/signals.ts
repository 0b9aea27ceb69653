const SIGNALS: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];

/**
 * Calls `onFirst` on the first SIGINT/SIGTERM; a second one exits at once (code 130), for an
 * operator who does not want to wait for the flush. Returns a function that removes the handlers.
 */
export function onShutdownSignal(onFirst: () => void): () => void {
  let received = false;
  const handler = () => {
    if (received) Deno.exit(130);
    received = true;
    onFirst();
  };
  for (const signal of SIGNALS) Deno.addSignalListener(signal, handler);
  return () => {
    for (const signal of SIGNALS) Deno.removeSignalListener(signal, handler);
  };
}

/**
 * Calls `onReload` on every SIGHUP (reload the model). Without a listener SIGHUP would end the process.
 * Returns a function that removes the handler.
 */
export function onReloadSignal(onReload: () => void): () => void {
  if (Deno.build.os === "windows") return () => {};
  Deno.addSignalListener("SIGHUP", onReload);
  return () => Deno.removeSignalListener("SIGHUP", onReload);
}
