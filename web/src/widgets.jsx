// The two widgets the page adds to RJSF's default theme: a seed box that reads its raw text
// (never a JavaScript number first) with a randomise button, and a file picker whose file is
// sent as a multipart part rather than as a value in the JSON.

import { createContext, useContext, useEffect, useState } from "react";
import { parseSeed, randomSeedValue } from "./seed.js";

function randomU32() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0];
}

/** The `seed` widget (a Randomise button unless `ui:options.randomize` is false). The form data holds a number (or, for string-typed seeds, the exact
 * text); text that is not a usable seed is kept as a string in the form data, which the form's
 * validation refuses with the message parseSeed gives. */
export function SeedWidget({ id, value, schema, options, required, disabled, readonly, onChange, onBlur, onFocus, rawErrors }) {
  const [text, setText] = useState(value === undefined || value === null ? "" : String(value));
  // Follow changes from outside (randomise, a reset): the text shows the value unless the text
  // already means that value.
  useEffect(() => {
    const p = parseSeed(text, schema);
    const same = (p.kind === "empty" && (value === undefined || value === null)) || (p.kind === "ok" && p.value === value) || (p.kind === "error" && value === text);
    if (!same) setText(value === undefined || value === null ? "" : String(value));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [value]);
  const update = (t) => {
    setText(t);
    const p = parseSeed(t, schema);
    onChange(p.kind === "empty" ? undefined : p.kind === "ok" ? p.value : t);
  };
  const parsed = parseSeed(text, schema);
  const hint = parsed.kind === "error" && !(rawErrors && rawErrors.length) ? parsed.message : null;
  return (
    <div className="seed">
      <input
        id={id}
        name={id}
        className="form-control"
        type="text"
        inputMode="numeric"
        autoComplete="off"
        placeholder="random"
        value={text}
        required={required}
        disabled={disabled || readonly}
        aria-invalid={parsed.kind === "error"}
        onChange={(e) => update(e.target.value)}
        onBlur={() => onBlur(id, value)}
        onFocus={() => onFocus(id, value)}
      />
      {options?.randomize !== false && (
        <button
          type="button"
          className="btn"
          data-testid={`${id}-randomise`}
          disabled={disabled || readonly}
          onClick={() => update(String(randomSeedValue(schema, randomU32)))}
        >
          Randomise
        </button>
      )}
      {hint && (
        <p className="seed-hint" role="alert">
          {hint}
        </p>
      )}
    </div>
  );
}

/** The chosen files of the form being filled, by input name. */
export const FilesContext = createContext(null);

/** The `upload` widget: a file picker. The file itself goes into FilesContext (sent as a
 * multipart part named after the input); the form data holds its name, so `required` and
 * `minLength` are met, and the server replaces it with the stored file's path. */
export function UploadWidget({ id, name, value, options, required, disabled, readonly, onChange }) {
  const files = useContext(FilesContext);
  const [preview, setPreview] = useState(null);
  useEffect(() => () => preview && URL.revokeObjectURL(preview), [preview]);
  const pick = (e) => {
    const f = e.target.files && e.target.files[0];
    if (!f) {
      files.delete(name);
      setPreview(null);
      onChange(undefined);
      return;
    }
    files.set(name, f);
    setPreview(f.type.startsWith("image/") ? URL.createObjectURL(f) : null);
    onChange(f.name);
  };
  return (
    <div className="upload">
      <input
        id={id}
        name={name}
        type="file"
        accept={options?.accept || undefined}
        required={required && !value}
        disabled={disabled || readonly}
        onChange={pick}
      />
      {preview && <img className="preview" src={preview} alt={`chosen: ${value}`} />}
    </div>
  );
}
