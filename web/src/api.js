// The HTTP API of `comfyd serve`, as the page uses it. The bearer token (when the server asks
// for one) lives in sessionStorage: asked once per tab, gone when the tab closes.

const TOKEN_KEY = "comfyd.token";

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (private mode): the token then lasts until the page reloads.
  }
  memoryToken = t;
}

let memoryToken = "";

function authHeaders() {
  const t = token() || memoryToken;
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** An API error: `status` (HTTP), `code` and `message` from the server's error body, and
 * `details` (per-input problems for 422). */
export class ApiError extends Error {
  constructor(status, body) {
    const e = body?.error ?? {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || `http_${status}`;
    this.details = Array.isArray(e.details) ? e.details : [];
  }
}

/** Calls the API; resolves to the parsed JSON, or rejects with an ApiError. */
export async function api(path, { method = "GET", json, form, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...authHeaders(), ...headers }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: { message: text.slice(0, 300) } };
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

/** A URL for an output file that an <img> or a download link can use. Without a token it is
 * the API URL itself; with one, the file is fetched with the token and given a blob: URL,
 * since neither <img> nor <a download> can send an Authorization header. */
export async function fileUrl(url) {
  const h = authHeaders();
  if (!h.Authorization) return url;
  const res = await fetch(url, { headers: h });
  if (!res.ok) throw new ApiError(res.status, null);
  return URL.createObjectURL(await res.blob());
}

export const FINAL = new Set(["done", "failed", "cancelled"]);

/**
 * Follows a run until a final state, calling `onRun` with each state. Reads the server-sent
 * events of `/v1/runs/ID/events` (through fetch, so the token goes along); when the stream
 * cannot be had or breaks before a final state, polls `GET /v1/runs/ID` once a second.
 * Returns a function that stops following.
 */
export function follow(id, onRun, onError) {
  const ctl = new AbortController();
  let last = null;
  const emit = (run) => {
    last = run;
    onRun(run);
  };
  (async () => {
    try {
      await streamEvents(`/v1/runs/${encodeURIComponent(id)}/events`, ctl.signal, emit);
    } catch (e) {
      if (ctl.signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return onError(e);
    }
    while (!ctl.signal.aborted && !(last && FINAL.has(last.status))) {
      try {
        emit(await api(`/v1/runs/${encodeURIComponent(id)}`, { signal: ctl.signal }));
      } catch (e) {
        if (ctl.signal.aborted) return;
        onError(e);
        if (e instanceof ApiError && e.status < 500) return;
      }
      if (last && FINAL.has(last.status)) return;
      await sleep(1000, ctl.signal);
    }
  })();
  return () => ctl.abort();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

async function streamEvents(url, signal, emit) {
  const res = await fetch(url, { headers: { Accept: "text/event-stream", ...authHeaders() }, signal });
  if (!res.ok || !res.body) throw new ApiError(res.status, null);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    for (const { event, data } of takeEvents(buf, (rest) => (buf = rest))) {
      if (event !== "status" && event !== "message") continue;
      let run;
      try {
        run = JSON.parse(data);
      } catch {
        continue;
      }
      emit(run);
      if (FINAL.has(run.status)) {
        await reader.cancel().catch(() => {});
        return;
      }
    }
  }
}

/** Splits complete server-sent events off the front of `buf` (per the HTML standard's
 * event-stream format: blank-line separated, `event:` and `data:` fields, `:` comments),
 * handing the unfinished rest to `setRest`. */
export function takeEvents(buf, setRest) {
  const events = [];
  const norm = buf.replace(/\r\n?/g, "\n");
  const blocks = norm.split("\n\n");
  setRest(blocks.pop());
  for (const block of blocks) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let v = i < 0 ? "" : line.slice(i + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "event") event = v;
      else if (field === "data") data.push(v);
    }
    if (data.length) events.push({ event, data: data.join("\n") });
  }
  return events;
}
