import Ajv2020 from "ajv/dist/2020.js";

// comfyc's input schemas are JSON Schema 2020-12 with form hints in `x-` keywords,
// which strict mode accepts once they are declared.
export function inputValidator(schema) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  ajv.addVocabulary([
    "x-comfyc", "x-model-folder", "x-multiline", "x-order", "x-seed", "x-step", "x-upload",
  ]);
  return ajv.compile(schema);
}
