// Seeds in the browser: what a typed seed means, and a random one. Pure functions; the seed
// widget and the form's validation both use them, and tests/seed.test.mjs tests them.
//
// A JavaScript number holds every integer up to 2^53−1 exactly and no further: 9007199254740993
// parsed as a number becomes 9007199254740992. So the page never parses a seed into a number
// before it has checked the raw text: a seed above 2^53−1 is refused with a message unless the
// schema types seeds as strings (then the text goes to the server exactly as typed).

export const MAX_SAFE = 9007199254740991n; // 2^53 − 1

/** Whether a schema types a seed as a string (big seeds as decimal text) rather than a number. */
export function seedIsString(schema) {
  const t = schema?.type;
  return t === "string" || (Array.isArray(t) && t.includes("string") && !t.includes("integer"));
}

/** The seed range [lo, hi] as BigInts. A numeric seed's upper end is at most 2^53−1; a string
 * seed keeps the schema's `maximum` when it has one, else 2^64−1 (ComfyUI's largest seed). */
export function seedBounds(schema) {
  const lo = toBig(schema?.minimum) ?? 0n;
  let hi;
  if (seedIsString(schema)) {
    hi = toBig(schema?.maximum) ?? (1n << 64n) - 1n;
  } else {
    hi = toBig(schema?.maximum) ?? MAX_SAFE;
    if (hi > MAX_SAFE) hi = MAX_SAFE;
  }
  return [lo < 0n ? 0n : lo, hi];
}

/** The largest seed the random button may pick: within [lo, min(hi, 2^53−1)]. */
export function randomBounds(schema) {
  const [lo, hi] = seedBounds(schema);
  return [lo, hi > MAX_SAFE ? MAX_SAFE : hi];
}

function toBig(v) {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isFinite(v)) {
    // A maximum such as 18446744073709551615 reads back from JSON as 18446744073709552000;
    // BigInt of that number is the float's exact value, which is what the schema can promise.
    return BigInt(Math.floor(v));
  }
  if (typeof v === "string" && /^\d+$/.test(v)) return BigInt(v);
  return undefined;
}

/**
 * What typed text means as a seed for `schema`:
 * - `{ kind: "empty" }`: no seed (the daemon picks one and records it);
 * - `{ kind: "ok", value }`: the value to put in the inputs (a number, or the exact text for a
 *   string-typed seed);
 * - `{ kind: "error", message }`: refused, with the message to show.
 */
export function parseSeed(text, schema) {
  const t = String(text ?? "").trim();
  if (t === "") return { kind: "empty" };
  if (!/^\d+$/.test(t)) {
    return { kind: "error", message: "A seed is a whole number of digits 0–9, nothing else." };
  }
  const big = BigInt(t);
  const [lo, hi] = seedBounds(schema);
  if (big < lo) return { kind: "error", message: `A seed is at least ${lo}.` };
  if (big > hi) {
    if (!seedIsString(schema) && big > MAX_SAFE) {
      return {
        kind: "error",
        message:
          `Seed ${t} is above ${MAX_SAFE} (2^53−1), the largest whole number a browser can send ` +
          `exactly; it would be sent as ${Number(t)}. Pick a seed up to ${MAX_SAFE}.`,
      };
    }
    return { kind: "error", message: `A seed is at most ${hi}.` };
  }
  // Canonical text: leading zeros dropped, so "007" means 7 both ways.
  const canon = big.toString();
  return { kind: "ok", value: seedIsString(schema) ? canon : Number(canon) };
}

/** A uniformly random seed in [lo, hi] (BigInts, hi − lo < 2^64), from `randomU32` (a function
 * returning a uniform 32-bit unsigned integer; crypto.getRandomValues in the page). */
export function randomSeed(lo, hi, randomU32) {
  const span = hi - lo + 1n;
  if (span <= 0n) return lo;
  // Rejection sampling over 64 random bits: no modulo bias.
  const space = 1n << 64n;
  const limit = space - (space % span);
  for (;;) {
    const r = (BigInt(randomU32() >>> 0) << 32n) | BigInt(randomU32() >>> 0);
    if (r < limit) return lo + (r % span);
  }
}

/** The value a random seed takes in the inputs for `schema` (a number, or text). */
export function randomSeedValue(schema, randomU32) {
  const [lo, hi] = randomBounds(schema);
  const s = randomSeed(lo, hi, randomU32);
  return seedIsString(schema) ? s.toString() : Number(s);
}
