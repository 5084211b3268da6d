/**
 * Runs every step once per round, each round starting one step later than
 * the one before: what a step leaves behind (a storage server's garbage, a
 * warm page cache) does not always fall on the same next step.
 */
export async function rotatedRounds(
  rounds: number,
  steps: (() => Promise<void>)[],
  afterRound?: (round: number) => void,
): Promise<void> {
  for (let round = 1; round <= rounds; round++) {
    for (let k = 0; k < steps.length; k++) await steps[(round - 1 + k) % steps.length]!();
    afterRound?.(round);
  }
}
