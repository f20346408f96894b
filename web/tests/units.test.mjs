// Unit tests of the page's pure functions (node --test; no browser).
import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_SAFE, parseSeed, randomBounds, randomSeed, randomSeedValue, seedBounds } from "../src/seed.js";
import { runRequest, uiSchemaFor, uploadInputs, xKeywords } from "../src/schema.js";
import { takeEvents } from "../src/api.js";
import Ajv2020 from "ajv/dist/2020.js";
import { KNOWN_X_KEYWORDS } from "../src/schema.js";

const intSeed = { type: "integer", minimum: 0, maximum: 18446744073709551615, "x-seed": true };
const safeSeed = { type: "integer", minimum: 0, maximum: 9007199254740991, "x-seed": true };
const strSeed = { type: "string", pattern: "^[0-9]+$", "x-seed": true };

test("a seed above 2^53-1 typed into an integer seed is refused, naming the limit", () => {
  for (const t of ["9007199254740992", "9007199254740993", "18446744073709551615"]) {
    const p = parseSeed(t, intSeed);
    assert.equal(p.kind, "error", t);
    assert.match(p.message, /9007199254740991/);
  }
  const big = parseSeed("9007199254740993", safeSeed);
  assert.equal(big.kind, "error");
  assert.match(big.message, /2\^53−1/);
});

test("seeds up to 2^53-1 become exact numbers", () => {
  assert.deepEqual(parseSeed("9007199254740991", intSeed), { kind: "ok", value: 9007199254740991 });
  assert.deepEqual(parseSeed(" 007 ", intSeed), { kind: "ok", value: 7 });
  assert.deepEqual(parseSeed("0", intSeed), { kind: "ok", value: 0 });
  assert.deepEqual(parseSeed("", intSeed), { kind: "empty" });
});

test("text that is not a whole number is refused", () => {
  for (const t of ["-1", "1.5", "1e3", "0x10", "12a", "١٢"]) assert.equal(parseSeed(t, intSeed).kind, "error", t);
});

test("a string-typed seed keeps big values exactly, up to 2^64-1", () => {
  assert.deepEqual(parseSeed("9007199254740993", strSeed), { kind: "ok", value: "9007199254740993" });
  assert.deepEqual(parseSeed("18446744073709551615", strSeed), { kind: "ok", value: "18446744073709551615" });
  assert.equal(parseSeed("18446744073709551616", strSeed).kind, "error");
});

test("the seed range of a numeric seed ends at 2^53-1; a narrower maximum is kept", () => {
  assert.deepEqual(seedBounds(intSeed), [0n, MAX_SAFE]);
  assert.deepEqual(seedBounds({ type: "integer", minimum: 5, maximum: 10 }), [5n, 10n]);
  assert.deepEqual(randomBounds(strSeed), [0n, MAX_SAFE]);
  assert.equal(parseSeed("11", { type: "integer", minimum: 5, maximum: 10 }).kind, "error");
});

test("randomSeed stays in range, reaches both ends, and rejects biased draws", () => {
  // A counter as the source: draws are deterministic, so both ends can be forced.
  const seq = (vals) => {
    let i = 0;
    return () => vals[i++ % vals.length];
  };
  assert.equal(randomSeed(0n, MAX_SAFE, seq([0, 0])), 0n);
  // 2^64-1 is above the rejection limit for span 2^53 only when 2^64 % span != 0; here span
  // divides 2^64, so the top draw is kept and maps to span-1.
  assert.equal(randomSeed(0n, MAX_SAFE, seq([0xffffffff, 0xffffffff])), MAX_SAFE);
  // span 3: 2^64 % 3 = 1, so the single top value 2^64-1 is rejected and the next draw used.
  assert.equal(randomSeed(10n, 12n, seq([0xffffffff, 0xffffffff, 0, 4])), 11n);
  for (let i = 0; i < 1000; i++) {
    const v = randomSeedValue(intSeed, () => (Math.random() * 2 ** 32) >>> 0);
    assert.ok(Number.isSafeInteger(v) && v >= 0, String(v));
  }
  assert.equal(typeof randomSeedValue(strSeed, () => 7), "string");
});

test("every x- keyword is found, nested ones too", () => {
  const s = { "x-order": ["a"], properties: { a: { "x-seed": true, items: { "x-foo": 1 } } }, "x-comfyc": {} };
  assert.deepEqual(xKeywords(s), ["x-comfyc", "x-foo", "x-order", "x-seed"]);
});

test("the UI schema follows the hints, and the server's uischema wins key by key", () => {
  const schema = {
    properties: {
      image: { type: "string", "x-upload": "image", contentMediaType: "image/*" },
      prompt: { type: "string", "x-multiline": true },
      seed: intSeed,
      cfg: { type: "number", "x-step": 0.1 },
    },
    "x-order": ["prompt", "image", "seed", "cfg", "gone"],
  };
  const ui = uiSchemaFor(schema, { prompt: { "ui:options": { rows: 6 } }, seed: { "ui:help": "h" } });
  assert.deepEqual(ui["ui:order"], ["prompt", "image", "seed", "cfg", "*"]);
  assert.equal(ui.image["ui:widget"], "upload");
  assert.equal(ui.image["ui:options"].accept, "image/*");
  assert.equal(ui.prompt["ui:widget"], "textarea");
  assert.equal(ui.prompt["ui:options"].rows, 6);
  assert.equal(ui.seed["ui:widget"], "seed");
  assert.equal(ui.seed["ui:help"], "h");
  assert.equal(ui.cfg["ui:options"].step, 0.1);
  assert.deepEqual(uploadInputs(schema), ["image"]);
  assert.deepEqual(uiSchemaFor(schema, {}), uiSchemaFor(schema, undefined));
  // A widget the page lacks is not taken from the server: the page's own choice stays.
  const knows = (_, w) => ["seed", "upload", "textarea", "text"].includes(w);
  const odd = uiSchemaFor(schema, { image: { "ui:widget": "image-picker" }, cfg: { "ui:widget": "knob", "ui:help": "h" } }, knows);
  assert.equal(odd.image["ui:widget"], "upload");
  assert.equal(odd.cfg["ui:widget"], undefined);
  assert.equal(odd.cfg["ui:help"], "h");
});

test("a run with a file is multipart: inputs JSON without the file's placeholder, then the file", () => {
  const file = { name: "cat.png" };
  const req = runRequest({ image: "cat.png", prompt: "p", seed: undefined }, new Map([["image", file]]));
  assert.deepEqual(req.parts, [["inputs", JSON.stringify({ prompt: "p" })], ["image", file, "cat.png"]]);
  assert.deepEqual(runRequest({ prompt: "p" }, new Map()), { json: { inputs: { prompt: "p" } } });
});

test("server-sent events split on blank lines, keep the unfinished rest, join data lines", () => {
  let rest = null;
  const ev = takeEvents(': hi\n\nevent: status\ndata: {"a":\ndata: 1}\n\nevent: status\r\ndata: {"b"', (r) => (rest = r));
  assert.deepEqual(ev, [{ event: "status", data: '{"a":\n1}' }]);
  assert.equal(rest, 'event: status\ndata: {"b"');
});

test("a strict Ajv2020 refuses the x- hints until they are a vocabulary, then validates", () => {
  const schema = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    type: "object",
    properties: { seed: intSeed, prompt: { type: "string", "x-multiline": true }, extra: { type: "string", "x-new-hint": 1 } },
    additionalProperties: false,
    "x-order": ["prompt", "seed", "extra"],
  };
  assert.throws(() => new Ajv2020({ strict: true }).compile(schema), /unknown keyword/);
  const ajv = new Ajv2020({ strict: true });
  ajv.addVocabulary([...new Set([...KNOWN_X_KEYWORDS, ...xKeywords(schema)])]);
  const validate = ajv.compile(schema);
  assert.equal(validate({ seed: 9007199254740991, prompt: "p" }), true);
  assert.equal(validate({ seed: "9007199254740993" }), false);
  assert.equal(validate({ seed: -1 }), false);
});
