// The form page of `comfyd serve`: pick a workflow, fill its form (RJSF, from the workflow's
// input schema and UI schema), submit, follow the run, see and download its outputs, browse
// earlier runs. Routes live in the URL's hash: #/w/NAME (a form) and #/r/ID (a run).

import { StrictMode, useCallback, useEffect, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import Form, { getDefaultRegistry } from "@rjsf/core";
import { hasWidget } from "@rjsf/utils";
import { customizeValidator } from "@rjsf/validator-ajv8";
import Ajv2020 from "ajv/dist/2020.js";
import { api, ApiError, fileUrl, follow, FINAL, setToken, token } from "./api.js";
import { KNOWN_X_KEYWORDS, runRequest, seedInputs, uiSchemaFor, xKeywords } from "./schema.js";
import { parseSeed } from "./seed.js";
import { FilesContext, SeedWidget, UploadWidget } from "./widgets.jsx";
import "./style.css";

const widgets = { seed: SeedWidget, upload: UploadWidget, file: UploadWidget, FileWidget: UploadWidget };

// RJSF's NumberField turns the text its widget hands up into a JavaScript number
// (9007199254740993 becomes 9007199254740992) before the form data sees it. A seed (`x-seed`,
// or the `seed` widget by the UI schema) skips it: the seed widget decides from the raw text
// and hands up a number only when it is exact; other numbers keep RJSF's own field.
const DefaultNumberField = getDefaultRegistry().fields.NumberField;
function NumberField(props) {
  if (props.schema?.["x-seed"] || props.uiSchema?.["ui:widget"] === "seed") {
    const { StringField } = props.registry.fields;
    return <StringField {...props} />;
  }
  return <DefaultNumberField {...props} />;
}
const fields = { NumberField };
const allWidgets = { ...getDefaultRegistry().widgets, ...widgets };
const knowsWidget = (schema, name) => hasWidget(schema, name, allWidgets);

/** An RJSF validator over a strict Ajv2020 (every strict check on: a schema Ajv would only
 * warn about is refused) that knows every `x-` keyword of `schema` as a vocabulary. */
function validatorFor(schema) {
  const vocabulary = [...new Set([...KNOWN_X_KEYWORDS, ...xKeywords(schema)])];
  return customizeValidator({
    AjvClass: Ajv2020,
    ajvOptionsOverrides: { strict: true },
    extenderFn: (ajv) => {
      ajv.addVocabulary(vocabulary);
      return ajv;
    },
  });
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [kind, ...rest] = h.split("/");
  let arg;
  try {
    arg = decodeURIComponent(rest.join("/"));
  } catch {
    return {};
  }
  if (kind === "w" && arg) return { workflow: arg };
  if (kind === "r" && arg) return { run: arg };
  return {};
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const on = () => setRoute(parseHash());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

function App() {
  const route = useRoute();
  const [needToken, setNeedToken] = useState(false);
  const [workflows, setWorkflows] = useState(null);
  const [error, setError] = useState(null);
  const [reload, setReload] = useState(0);
  // Bumped when a followed run changes state, so the run list shows it.
  const [runsTick, setRunsTick] = useState(0);
  const onStatus = useCallback(() => setRunsTick((n) => n + 1), []);

  // Any 401 anywhere asks for the token; the views retry once one is given (reload).
  const onError = useCallback((e) => {
    if (e instanceof ApiError && e.status === 401) setNeedToken(true);
    else setError(e);
  }, []);

  useEffect(() => {
    api("/v1/workflows")
      .then((b) => setWorkflows(b.workflows ?? []))
      .catch(onError);
  }, [reload, onError]);

  useEffect(() => {
    if (!route.workflow && !route.run && workflows && workflows.length) {
      location.hash = `#/w/${encodeURIComponent(workflows[0].name)}`;
    }
  }, [route, workflows]);

  return (
    <>
      <header>
        <h1>
          <a href="#/">comfyd</a>
        </h1>
        <span className="spacer" />
        <a className="muted small" href="/openapi.json">
          API
        </a>
        <a className="muted small" href="/assets/licenses.txt">
          licences
        </a>
        {token() && (
          <button type="button" className="link" onClick={() => (setToken(""), setNeedToken(true))}>
            forget token
          </button>
        )}
      </header>
      {needToken && (
        <TokenPrompt
          onToken={(t) => {
            setToken(t);
            setNeedToken(false);
            setError(null);
            setReload((n) => n + 1);
          }}
        />
      )}
      {error && (
        <p className="error" role="alert">
          {error.message}
        </p>
      )}
      <div className="layout">
        <nav>
          <h2>Workflows</h2>
          {workflows === null ? (
            <p className="muted">loading…</p>
          ) : workflows.length === 0 ? (
            <p className="muted">none</p>
          ) : (
            <ul className="workflows">
              {workflows.map((w) => (
                <li key={w.name} className={route.workflow === w.name ? "current" : ""}>
                  <a href={`#/w/${encodeURIComponent(w.name)}`} data-workflow={w.name}>
                    {w.title || w.name}
                  </a>
                  <span className="muted"> {w.version}</span>
                </li>
              ))}
            </ul>
          )}
          <Runs key={reload} current={route.run} tick={runsTick} onError={onError} />
        </nav>
        <main>
          {route.workflow && <WorkflowForm key={`${route.workflow}:${reload}`} name={route.workflow} onError={onError} />}
          {route.run && <RunView key={`${route.run}:${reload}`} id={route.run} onError={onError} onStatus={onStatus} />}
        </main>
      </div>
    </>
  );
}

function TokenPrompt({ onToken }) {
  const [t, setT] = useState("");
  return (
    <form
      className="token"
      onSubmit={(e) => {
        e.preventDefault();
        if (t.trim()) onToken(t.trim());
      }}
    >
      <label htmlFor="token">This server needs an API token.</label>
      <input id="token" type="password" autoComplete="off" value={t} onChange={(e) => setT(e.target.value)} />
      <button type="submit" className="btn">
        Use token
      </button>
    </form>
  );
}

function WorkflowForm({ name, onError }) {
  const [wf, setWf] = useState(null);
  const [formData, setFormData] = useState({});
  const [extraErrors, setExtraErrors] = useState(undefined);
  const [busy, setBusy] = useState(false);
  const [submitError, setSubmitError] = useState(null);
  const files = useMemo(() => new Map(), [name]);

  useEffect(() => {
    api(`/v1/workflows/${encodeURIComponent(name)}`)
      .then((b) => {
        setWf(b);
        setFormData({});
      })
      .catch(onError);
  }, [name, onError]);

  const validator = useMemo(() => (wf ? validatorFor(wf.schema) : null), [wf]);
  const uiSchema = useMemo(() => (wf ? uiSchemaFor(wf.schema, wf.uischema, knowsWidget) : {}), [wf]);
  const seeds = useMemo(() => (wf ? seedInputs(wf.schema) : []), [wf]);

  if (!wf) return <p className="muted">loading {name}…</p>;

  // A seed whose text parseSeed refused stays a string in the form data; say why here, and
  // drop Ajv's own "must be integer" for it, which would say less.
  const customValidate = (data, errors) => {
    for (const k of seeds) {
      const v = data?.[k];
      if (typeof v !== "string") continue;
      const p = parseSeed(v, wf.schema.properties[k]);
      if (p.kind === "error") errors[k]?.addError(p.message);
    }
    return errors;
  };
  // The error list names inputs by title ("Seed: ...") rather than by property path (".seed").
  const transformErrors = (errors) =>
    errors
      .filter((e) => {
        const k = (e.property || "").replace(/^\./, "");
        return !(seeds.includes(k) && typeof formData?.[k] === "string" && e.name === "type");
      })
      .map((e) => {
        const k = (e.property || "").replace(/^\./, "");
        const title = wf.schema.properties?.[k]?.title || k;
        return title ? { ...e, stack: `${title}: ${e.message}` } : e;
      });

  const submit = async ({ formData: data }) => {
    setBusy(true);
    setSubmitError(null);
    setExtraErrors(undefined);
    const req = runRequest(data, files);
    const key = idempotencyKey();
    try {
      let run;
      if (req.json) {
        run = await api(`/v1/workflows/${encodeURIComponent(name)}/runs`, {
          method: "POST",
          json: req.json,
          headers: { "Idempotency-Key": key },
        });
      } else {
        const form = new FormData();
        for (const [part, value, filename] of req.parts) {
          if (filename) form.append(part, value, filename);
          else form.append(part, value);
        }
        run = await api(`/v1/workflows/${encodeURIComponent(name)}/runs`, {
          method: "POST",
          form,
          headers: { "Idempotency-Key": key },
        });
      }
      location.hash = `#/r/${encodeURIComponent(run.id)}`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) onError(e);
      else if (e instanceof ApiError && e.status === 422 && e.details.length) {
        const es = {};
        for (const d of e.details) {
          const k = d.input || d.path || "";
          const target = k && wf.schema.properties?.[k] ? k : null;
          if (target) (es[target] ??= { __errors: [] }).__errors.push(d.message);
          else (es.__errors ??= []).push(k ? `${k}: ${d.message}` : d.message);
        }
        setExtraErrors(es);
        setSubmitError(e);
      } else setSubmitError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="workflow">
      <h2>{wf.title || wf.name}</h2>
      <FilesContext.Provider value={files}>
        <Form
          schema={wf.schema}
          uiSchema={{ ...uiSchema, "ui:submitButtonOptions": { submitText: busy ? "Submitting…" : "Run", props: { disabled: busy } } }}
          formData={formData}
          validator={validator}
          widgets={widgets}
          fields={fields}
          customValidate={customValidate}
          transformErrors={transformErrors}
          extraErrors={extraErrors}
          showErrorList="top"
          noHtml5Validate
          onChange={(e) => setFormData(e.formData)}
          // Refused at submit: the error list at the top says why; bring it into view.
          onError={() => document.querySelector(".panel.errors")?.scrollIntoView({ block: "nearest" })}
          onSubmit={submit}
        />
      </FilesContext.Provider>
      {submitError && (
        <p className="error" role="alert">
          The run was not accepted: {submitError.message}
        </p>
      )}
    </section>
  );
}

function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return [...a].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function RunView({ id, onError, onStatus }) {
  const [run, setRun] = useState(null);
  const [err, setErr] = useState(null);
  const status = run?.status;
  useEffect(() => {
    setRun(null);
    return follow(id, setRun, (e) => (e instanceof ApiError && e.status === 401 ? onError(e) : setErr(e)));
  }, [id, onError]);
  useEffect(() => {
    if (status) onStatus();
  }, [status, onStatus]);
  const cancel = () => api(`/v1/runs/${encodeURIComponent(id)}`, { method: "DELETE" }).then(setRun, setErr);

  if (!run) return err ? <p className="error">{err.message}</p> : <p className="muted">loading run {id}…</p>;
  const p = run.progress;
  return (
    <section className="run" data-status={run.status}>
      <h2>
        Run <code>{run.id}</code>
      </h2>
      <p>
        <a href={`#/w/${encodeURIComponent(String(run.workflow).replace(/@[^@]*$/, ""))}`}>{run.workflow}</a> ·{" "}
        <span className={`status ${run.status}`} data-testid="run-status">
          {run.status}
        </span>
        {run.status === "queued" && run.position !== undefined && <> · position {run.position}</>}
        {!FINAL.has(run.status) && (
          <>
            {" "}
            <button type="button" className="btn" onClick={cancel}>
              Cancel
            </button>
          </>
        )}
      </p>
      {run.status === "running" && p && (
        <div className="progress">
          <progress value={p.value ?? 0} max={p.max || 1} />
          <span className="muted">
            {p.class || ""} {p.node !== undefined && `(node ${p.node})`} {p.value}/{p.max}
          </span>
        </div>
      )}
      {run.status === "failed" && run.error && <pre className="error">{JSON.stringify(run.error, null, 2)}</pre>}
      {Array.isArray(run.outputs) && run.outputs.length > 0 && (
        <ul className="outputs">
          {run.outputs.map((o) => (
            <Output key={o.url} o={o} />
          ))}
        </ul>
      )}
      <p className="muted times">
        {run.created && <>created {when(run.created)} </>}
        {run.started && <>· started {when(run.started)} </>}
        {run.ended && <>· ended {when(run.ended)}</>}
      </p>
      {err && <p className="error">{err.message}</p>}
    </section>
  );
}

function Output({ o }) {
  const [src, setSrc] = useState(null);
  const isImage = o.kind === "image" || (o.media_type || "").startsWith("image/");
  useEffect(() => {
    let url = null;
    fileUrl(o.url).then(
      (u) => setSrc((url = u)),
      () => setSrc(o.url),
    );
    return () => url && url.startsWith("blob:") && URL.revokeObjectURL(url);
  }, [o.url]);
  return (
    <li className="output">
      {isImage && src && <img src={src} alt={o.file} data-testid="output-image" />}
      {(o.media_type || "").startsWith("video/") && src && <video src={src} controls />}
      {(o.media_type || "").startsWith("audio/") && src && <audio src={src} controls />}
      <div>
        <a href={src || o.url} download={o.file}>
          {o.file}
        </a>{" "}
        <span className="muted">
          {o.media_type} · {formatSize(o.size)}
        </span>
        {o.sha256 && <div className="muted hash">sha256 {o.sha256}</div>}
      </div>
    </li>
  );
}

/** A time from the API (milliseconds since the epoch, or RFC 3339 text) in the reader's locale. */
function when(t) {
  const d = new Date(typeof t === "string" && /^\d+$/.test(t) ? Number(t) : t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

function formatSize(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function Runs({ current, tick: outerTick, onError }) {
  const [runs, setRuns] = useState([]);
  const [next, setNext] = useState(null);
  const [tick, setTick] = useState(0);
  const load = useCallback(
    (cursor) =>
      api(`/v1/runs?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
        .then((b) => {
          setRuns((old) => (cursor ? [...old, ...(b.runs ?? [])] : b.runs ?? []));
          setNext(b.next ?? null);
        })
        .catch(onError),
    [onError],
  );
  // Reloaded when the route changes (a new run shows up at the top).
  useEffect(() => {
    load(null);
  }, [load, current, tick, outerTick]);
  return (
    <>
      <h2>
        Runs{" "}
        <button type="button" className="link" onClick={() => setTick((n) => n + 1)}>
          refresh
        </button>
      </h2>
      <ul className="runs">
        {runs.map((r) => (
          <li key={r.id} className={r.id === current ? "current" : ""}>
            <a href={`#/r/${encodeURIComponent(r.id)}`}>
              <span className={`status ${r.status}`}>{r.status}</span> {r.workflow}
            </a>
            <div className="muted small">{when(r.created)}</div>
          </li>
        ))}
      </ul>
      {next && (
        <button type="button" className="link" onClick={() => load(next)}>
          older runs
        </button>
      )}
    </>
  );
}

createRoot(document.getElementById("app")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
