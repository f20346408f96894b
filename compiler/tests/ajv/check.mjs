// Runs comfyc's input schemas through the README's Ajv set-up (comfyc-ajv.mjs, verbatim).
// Reads cases from the JSON file named by argv[2]:
//   [{"name", "schema", "valid": [JSON text...], "invalid": [JSON text...]}]
// Instances are JSON text parsed here by JSON.parse, as a browser would, so a seed of
// 2^53 + 1 arrives as the double it becomes. Writes one JSON result per case to stdout;
// the Rust test (tests/it/ajv.rs) judges them.
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import { inputValidator } from "./comfyc-ajv.mjs";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = [];
for (const c of cases) {
  const result = { name: c.name, compiled: false, error: null, valid: [], invalid: [] };
  // Without the vocabulary a strict Ajv refuses the schema: the set-up is needed.
  try {
    new Ajv2020({ strict: true }).compile(c.schema);
    result.plainStrictCompiles = true;
  } catch {
    result.plainStrictCompiles = false;
  }
  let validate;
  try {
    validate = inputValidator(c.schema);
    result.compiled = true;
  } catch (e) {
    result.error = String(e && e.message ? e.message : e);
    results.push(result);
    continue;
  }
  for (const text of c.valid) {
    const ok = validate(JSON.parse(text));
    result.valid.push({ text, ok, errors: ok ? [] : validate.errors });
  }
  for (const text of c.invalid) {
    const ok = validate(JSON.parse(text));
    result.invalid.push({ text, ok });
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
