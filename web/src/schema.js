// From a workflow's input schema (and the UI schema the server sends) to what RJSF needs.
// Pure functions; tests/schema.test.mjs tests them.

/** Every `x-*` keyword used anywhere in `schema`, sorted: the page registers them all with Ajv
 * (addVocabulary) so a strict Ajv2020 accepts the compiler's hints instead of refusing them. */
export function xKeywords(schema) {
  const found = new Set();
  const walk = (v) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      for (const [k, sub] of Object.entries(v)) {
        if (k.startsWith("x-")) found.add(k);
        // A keyword's own value is data, not schema, except under schema-holding keywords;
        // walking everything is harmless (an `x-` key inside data only adds a keyword).
        walk(sub);
      }
    }
  };
  walk(schema);
  return [...found].sort();
}

/** The keywords comfyc documents (README, "Input schemas"); registered even when a schema at
 * hand does not use them, so one validator set-up serves every workflow. */
export const KNOWN_X_KEYWORDS = [
  "x-comfyc",
  "x-model-folder",
  "x-multiline",
  "x-order",
  "x-seed",
  "x-step",
  "x-upload",
];

/** The names of the inputs that take a file upload (`x-upload` on a top-level property). */
export function uploadInputs(schema) {
  return Object.entries(schema?.properties ?? {})
    .filter(([, p]) => p && p["x-upload"])
    .map(([name]) => name);
}

/** The names of the inputs that are seeds (`x-seed`). */
export function seedInputs(schema) {
  return Object.entries(schema?.properties ?? {})
    .filter(([, p]) => p && p["x-seed"])
    .map(([name]) => name);
}

/**
 * The RJSF uiSchema for `schema`: what the schema's own hints say (field order, textareas,
 * seed and upload widgets, steps), with the server's `uischema` laid over it (the server's
 * choices win, key by key, so an older or empty `uischema` still gives a usable form). A
 * widget the page does not have (`knows(propertySchema, widgetName)` false) is not taken from
 * the server: RJSF would refuse to render the whole form for it.
 */
export function uiSchemaFor(schema, serverUi, knows = () => true) {
  const ui = {};
  const props = schema?.properties ?? {};
  const order = Array.isArray(schema?.["x-order"]) ? schema["x-order"].filter((k) => k in props) : [];
  if (order.length) ui["ui:order"] = [...order, "*"];
  for (const [name, p] of Object.entries(props)) {
    if (!p || typeof p !== "object") continue;
    const field = {};
    if (p["x-seed"]) field["ui:widget"] = "seed";
    else if (p["x-upload"]) {
      field["ui:widget"] = "upload";
      field["ui:options"] = { accept: accept(p) };
    } else if (p["x-multiline"]) {
      field["ui:widget"] = "textarea";
      field["ui:options"] = { rows: 3 };
    } else if (typeof p["x-step"] === "number" && (p.type === "number" || p.type === "integer")) {
      field["ui:options"] = { step: p["x-step"] };
    }
    if (Object.keys(field).length) ui[name] = field;
  }
  const merged = mergeUi(ui, serverUi);
  for (const [name, p] of Object.entries(props)) {
    const w = merged[name]?.["ui:widget"];
    if (typeof w === "string" && !knows(p, w)) {
      const mine = ui[name]?.["ui:widget"];
      merged[name] = { ...merged[name] };
      if (mine) merged[name]["ui:widget"] = mine;
      else delete merged[name]["ui:widget"];
    }
  }
  return merged;
}

function accept(p) {
  if (typeof p.contentMediaType === "string") return p.contentMediaType;
  const kind = p["x-upload"];
  return typeof kind === "string" && kind !== "mask" ? `${kind}/*` : "image/*";
}

function mergeUi(base, over) {
  if (!over || typeof over !== "object" || Array.isArray(over)) return base;
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      b && typeof b === "object" && !Array.isArray(b) && v && typeof v === "object" && !Array.isArray(v)
        ? mergeUi(b, v)
        : v;
  }
  return out;
}

/**
 * The request for a run: JSON when no file was chosen, else multipart with a part `inputs`
 * (the JSON text of the other inputs) and one part per file, named after its input. The
 * file inputs' placeholder values (the chosen file's name) never go to the server: the server
 * stores each part and sets the input to the stored path.
 * Returns `{ json }` or `{ parts: [[name, value, filename?]...] }`.
 */
export function runRequest(formData, files) {
  const inputs = {};
  for (const [k, v] of Object.entries(formData ?? {})) {
    if (v === undefined || files.has(k)) continue;
    inputs[k] = v;
  }
  if (files.size === 0) {
    return { json: { inputs } };
  }
  const parts = [["inputs", JSON.stringify(inputs)]];
  for (const [name, file] of [...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    parts.push([name, file, file.name]);
  }
  return { parts };
}
