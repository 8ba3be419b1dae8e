/** Runs each kind once per round, `runs` rounds (side by side: drift hits every kind alike). */
export async function interleaved(
  kinds: Record<string, () => Promise<number>>,
  runs: number,
): Promise<Record<string, number[]>> {
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]));
  for (let i = 0; i < runs; i++)
    for (const [k, run] of Object.entries(kinds)) {
      times[k]!.push(await run());
      process.stderr.write('.');
    }
  return times;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** One line per kind: its median, then every run, in ms. */
export function printTimes(title: string, times: Record<string, number[]>): void {
  console.log(`\n${title}`);
  for (const [k, xs] of Object.entries(times))
    console.log(
      `  ${k.padEnd(26)} ${median(xs).toFixed(0).padStart(6)} ms   [${xs.map((x) => x.toFixed(0)).join(', ')}]`,
    );
}
