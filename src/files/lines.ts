/**
 * Splits a byte stream into lines without copying: each line is a view into the chunk it came
 * from (lines that span chunks are joined). A trailing `\r` is dropped; blank lines are skipped.
 */
export async function* splitLines(
  stream: AsyncIterable<Uint8Array>,
): AsyncGenerator<{ lines: Uint8Array[]; lineNumbers: number[] }> {
  let carry: Uint8Array | undefined;
  let lineNumber = 0;
  for await (let chunk of stream) {
    if (carry !== undefined) {
      const joined = new Uint8Array(carry.length + chunk.length);
      joined.set(carry);
      joined.set(chunk, carry.length);
      chunk = joined;
      carry = undefined;
    }
    const lines: Uint8Array[] = [];
    const lineNumbers: number[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      lineNumber++;
      const end = nl > start && chunk[nl - 1] === 13 ? nl - 1 : nl;
      if (end > start) {
        lines.push(chunk.subarray(start, end));
        lineNumbers.push(lineNumber);
      }
      start = nl + 1;
    }
    if (start < chunk.length) carry = chunk.subarray(start);
    if (lines.length > 0) yield { lines, lineNumbers };
  }
  if (carry !== undefined && carry.length > 0) {
    lineNumber++;
    const end = carry[carry.length - 1] === 13 ? carry.length - 1 : carry.length;
    if (end > 0) yield { lines: [carry.subarray(0, end)], lineNumbers: [lineNumber] };
  }
}
