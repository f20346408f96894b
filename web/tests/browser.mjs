// The form page in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against the real processes (comfy-sim, `comfyd run`, `comfyd serve`) over a temporary job
// directory with the repository's example workflows. Run by scripts/browser-test, which builds
// the binaries first; COMFYD, COMFY_SIM and CHROMIUM name them (defaults: target/debug, and
// /usr/bin/chromium).
//
// What it asserts:
// - every example workflow's form renders;
// - txt2img: the form is generated from the schema (titles, a textarea for the prompt, the seed
//   widget); randomise picks a seed within [0, 2^53−1]; a run submitted from the form ends
//   `done` and its output image loads on the page (naturalWidth > 0); the seed typed
//   (9007199254740991, 2^53−1) reaches the job exactly (its manifest).
// - a seed of 2^53+1 (9007199254740993) is refused with a message naming the limit, the text
//   stays as typed, and no run is created.
// - img2img: a file name the server refuses (`..`) gets its 422 message on the input and makes
//   no run;
// - img2img: an image chosen in the file input is sent as a multipart part, stored under the
//   inputs root by content (sha256), the run ends `done` and its output image loads.
// - earlier runs are listed and open from the list.
// - a run queued while no daemon runs shows its position, and the page's Cancel cancels it.
// - with --tokens, the page asks for the token on 401 and then works.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const repo = resolve(new URL("../..", import.meta.url).pathname);
const COMFYD = process.env.COMFYD || join(repo, "target/debug/comfyd");
const SIM = process.env.COMFY_SIM || join(repo, "target/debug/comfy-sim");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const KEEP = process.env.KEEP_TMP === "1";

const children = [];
const tmp = mkdtempSync(join(tmpdir(), "comfyd-page-"));
let failed = false;

function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  if (!KEEP && !failed) rmSync(tmp, { recursive: true, force: true });
}
process.on("exit", cleanup);
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));

/** Starts a process, its output appended to a log file; resolves with the first match of
 * `ready` (a regex) in its output, or rejects when it exits first or after `ms`. */
function start(name, cmd, args, ready, ms = 30000) {
  const log = join(tmp, `${name}.log`);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  children.push(child);
  let out = "";
  return new Promise((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready after ${ms} ms; output:\n${out}`)), ms);
    const on = (d) => {
      out += d;
      writeFileSync(log, out);
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolveP({ child, match: m, log: () => out });
      }
    };
    child.stdout.on("data", on);
    child.stderr.on("data", on);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready; output:\n${out}`));
    });
  });
}

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function json(url, init) {
  const r = await fetch(url, init);
  const t = await r.text();
  if (!r.ok) throw new Error(`${init?.method || "GET"} ${url}: ${r.status} ${t}`);
  return JSON.parse(t);
}

async function main() {
  const jobs = join(tmp, "jobs");
  const inputs = join(tmp, "inputs");
  mkdirSync(jobs);
  mkdirSync(inputs);

  const sim = await start(
    "comfy-sim",
    SIM,
    ["--port", "0", "--root", join(tmp, "sim"), "--node-ms", "150", "--model", "checkpoints/v1-5-pruned-emaonly-fp16.safetensors"],
    /listening port=(\d+)/,
  );
  const comfyUrl = `http://127.0.0.1:${sim.match[1]}`;
  const daemon = await start(
    "comfyd-run",
    COMFYD,
    ["run", "--jobs", jobs, "--workflows", join(repo, "examples"), "--inputs", inputs, "--comfy-url", comfyUrl, "--gpu", "0"],
    /./,
  );
  const serveArgs = ["serve", "--listen", "127.0.0.1:0", "--jobs", jobs, "--workflows", join(repo, "examples"), "--inputs", inputs];
  const serve = await start("comfyd-serve", COMFYD, serveArgs, /serving at (http:\/\/[^/\s]+)\//);
  const base = serve.match[1];
  console.log(`# comfyd serve at ${base}, ComfyUI simulator at ${comfyUrl}, files in ${tmp}`);

  const profile = mkdtempSync(join(tmpdir(), "comfyd-page-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const pageErrors = [];
  try {
    const page = browser.pages()[0] ?? (await browser.newPage());
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    // Console errors count too, but for the 401s and the 422 the test asks for on purpose.
    page.on("console", (m) => {
      if (m.type() === "error" && !/status of (401|422)/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
    });
    const streams = [];
    page.on("response", (r) => {
      if (/\/v1\/runs\/[^/]+\/events$/.test(new URL(r.url()).pathname)) streams.push({ url: r.url(), status: r.status(), type: r.headers()["content-type"] || "" });
    });
    page.setDefaultTimeout(20000);

    // --- every workflow's form renders (RJSF refuses a whole form over one bad schema part).
    for (const w of (await json(`${base}/v1/workflows`)).workflows) {
      await page.goto(`${base}/#/w/${encodeURIComponent(w.name)}`);
      await page.waitForSelector("section.workflow button[type=submit]");
      const n = await page.locator("section.workflow .form-group[class*=field-]").count();
      check(n > 1, `${w.name}: its form renders (${n} fields)`);
    }

    // --- txt2img: the generated form, randomise, a run to its image.
    await page.goto(`${base}/#/w/txt2img`);
    await page.waitForSelector("#root_prompt");
    check((await page.locator("#root_prompt").evaluate((e) => e.tagName)) === "TEXTAREA", "txt2img: the multiline prompt is a textarea");
    check((await page.locator("label[for=root_steps]").innerText()).includes("Steps"), "txt2img: inputs are labelled with their titles");
    const ui = (await json(`${base}/v1/workflows/txt2img`)).uischema ?? {};
    const rows = ui.prompt?.["ui:options"]?.rows;
    if (rows !== undefined) {
      check((await page.locator("#root_prompt").getAttribute("rows")) === String(rows), `txt2img: the server's uischema is applied (prompt rows ${rows})`);
    } else {
      console.log("# the server sends no uischema for txt2img's prompt: the page's own hints apply");
    }
    const order = await page.locator("form .form-group[class*=field] > label").allInnerTexts();
    check(order.length >= 3 && order[0].startsWith("Prompt"), `txt2img: fields in x-order, prompt first (${order.slice(0, 3).join(" | ")})`);
    for (let i = 0; i < 5; i++) {
      await page.click("[data-testid=root_seed-randomise]");
      const v = await page.inputValue("#root_seed");
      check(/^\d+$/.test(v) && BigInt(v) <= 9007199254740991n, `randomise: seed ${v} is within [0, 2^53−1]`);
    }

    // 2^53+1 is refused, stays as typed, and creates no run.
    const before = (await json(`${base}/v1/runs?limit=100`)).runs.length;
    await page.fill("#root_prompt", "a red fox in the snow");
    await page.fill("#root_seed", "9007199254740993");
    const hint = await page.locator(".seed-hint").innerText();
    check(/9007199254740991/.test(hint), `seed 2^53+1: the widget says why at once ("${hint.slice(0, 80)}…")`);
    await page.click("button[type=submit]");
    const listed = await page.locator(".panel.errors, .error-detail").first().innerText();
    check(/9007199254740991/.test(listed), "seed 2^53+1: submitting shows the refusal in the form's errors");
    check((await page.inputValue("#root_seed")) === "9007199254740993", "seed 2^53+1: the typed text is not changed");
    await page.waitForTimeout(500);
    check((await json(`${base}/v1/runs?limit=100`)).runs.length === before, "seed 2^53+1: no run was created");

    // 2^53−1 survives exactly, end to end.
    await page.fill("#root_seed", "9007199254740991");
    check((await page.locator(".seed-hint").count()) === 0, "seed 2^53−1: accepted by the widget");
    await page.fill("#root_steps", "3");
    await page.click("button[type=submit]");
    await page.waitForURL(/#\/r\//);
    const runId = decodeURIComponent(page.url().split("#/r/")[1]);
    // What the run view showed on its way to done: its states, and whether a progress bar came.
    await page.evaluate(() => {
      window.__seen = { states: [], progress: false };
      const look = () => {
        const s = document.querySelector("[data-testid=run-status]")?.textContent;
        if (s && window.__seen.states.at(-1) !== s) window.__seen.states.push(s);
        if (document.querySelector("section.run progress")) window.__seen.progress = true;
      };
      look();
      new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.waitForSelector("[data-testid=run-status]:text('done')", { timeout: 90000 });
    const img = page.locator("img[data-testid=output-image]").first();
    await img.waitFor();
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
    const w = await img.evaluate((el) => el.naturalWidth);
    check(w > 0, `txt2img run ${runId}: done, and its output image loaded on the page (naturalWidth ${w})`);
    const seen = await page.evaluate(() => window.__seen);
    check(seen.states.includes("running") && seen.progress, `txt2img: the page showed the run running, with a progress bar (states ${seen.states.join(" → ")})`);
    const stream = streams.find((s) => s.url.includes(`/v1/runs/${runId}/events`));
    check(stream && stream.status === 200 && stream.type.startsWith("text/event-stream"), "txt2img: the page followed the run through its event stream");
    const run = await json(`${base}/v1/runs/${encodeURIComponent(runId)}`);
    const manifest = JSON.parse(readFileSync(join(tmp, "outputs", runId, "manifest.json"), "utf8").replace(/"seed":\s*(\d+)/g, '"seed":"$1"'));
    check(manifest.inputs?.seed === "9007199254740991", `txt2img: the job ran with seed 9007199254740991 exactly (manifest: ${manifest.inputs?.seed})`);
    check(manifest.inputs?.steps === 3 && manifest.inputs?.prompt === "a red fox in the snow", "txt2img: the other inputs reached the job as filled");
    const dl = page.locator(".output a[download]").first();
    check((await dl.getAttribute("href")).startsWith(`/v1/runs/${runId}/outputs/`), "txt2img: the output has a download link");

    // --- img2img: upload an image (the txt2img output) as a multipart part.
    const out = run.outputs[0];
    const png = Buffer.from(await (await fetch(base + out.url)).arrayBuffer());
    const pngPath = join(tmp, "source.png");
    writeFileSync(pngPath, png);
    await page.goto(`${base}/#/w/img2img`);
    await page.waitForSelector("#root_image");
    // A file name the server refuses (`..` in it): its 422 is shown on the input, no run made.
    const runsBefore = (await json(`${base}/v1/runs?limit=100`)).runs.length;
    await page.setInputFiles("#root_image", { name: "fox..png", mimeType: "image/png", buffer: png });
    await page.click("button[type=submit]");
    const refusal = await page.locator(".upload").locator("xpath=ancestor::div[contains(@class,'form-group')]").locator(".error-detail").innerText();
    check(refusal.includes("..") && /#\/w\/img2img$/.test(page.url()), `img2img: the server's 422 for a refused file name shows on the input ("${refusal.trim()}")`);
    check((await json(`${base}/v1/runs?limit=100`)).runs.length === runsBefore, "img2img: the refused upload made no run");
    await page.setInputFiles("#root_image", pngPath);
    await page.waitForSelector(".upload img.preview");
    await page.fill("#root_prompt", "a watercolour fox");
    await page.click("[data-testid=root_seed-randomise]");
    const seed2 = await page.inputValue("#root_seed");
    await page.click("button[type=submit]");
    await page.waitForURL(/#\/r\//);
    const run2Id = decodeURIComponent(page.url().split("#/r/")[1]);
    await page.waitForSelector("[data-testid=run-status]:text('done')", { timeout: 90000 });
    const img2 = page.locator("img[data-testid=output-image]").first();
    await img2.waitFor();
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img2.elementHandle());
    check((await img2.evaluate((el) => el.naturalWidth)) > 0, `img2img run ${run2Id}: done, and its output image loaded on the page`);
    const sha = createHash("sha256").update(png).digest("hex");
    const stored = walk(inputs).filter((p) => {
      try {
        return createHash("sha256").update(readFileSync(p)).digest("hex") === sha;
      } catch {
        return false;
      }
    });
    check(stored.length === 1 && stored[0].includes(sha.slice(0, 16)), `img2img: the upload is stored once under the inputs root, by content (${stored.map((p) => p.slice(inputs.length + 1)).join(", ")})`);
    const m2 = JSON.parse(readFileSync(join(tmp, "outputs", run2Id, "manifest.json"), "utf8").replace(/"seed":\s*(\d+)/g, '"seed":"$1"'));
    check(m2.inputs?.seed === seed2, `img2img: the randomised seed ${seed2} reached the job`);

    // --- earlier runs: listed, newest first, and they open.
    await page.goto(`${base}/#/`);
    await page.waitForSelector(`nav .runs a[href="#/r/${encodeURIComponent(runId)}"]`);
    const links = await page.locator("nav .runs a").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    check(links.indexOf(`#/r/${encodeURIComponent(run2Id)}`) < links.indexOf(`#/r/${encodeURIComponent(runId)}`), "runs: earlier runs are listed, newest first");
    await page.click(`nav .runs a[href="#/r/${encodeURIComponent(runId)}"]`);
    await page.waitForSelector("[data-testid=run-status]:text('done')");
    await page.locator("img[data-testid=output-image]").first().waitFor();
    check(true, "runs: an earlier run opens from the list with its outputs");

    // --- a queued run: with the daemon stopped, a solid-color run waits; the page says so and
    // cancels it.
    const exited = new Promise((r) => daemon.child.once("exit", r));
    daemon.child.kill("SIGTERM");
    await exited;
    await page.goto(`${base}/#/w/solid-color`);
    await page.waitForSelector("#root_width");
    await page.fill("#root_width", "32");
    await page.click("button[type=submit]");
    await page.waitForURL(/#\/r\//);
    const run3Id = decodeURIComponent(page.url().split("#/r/")[1]);
    await page.waitForSelector("[data-testid=run-status]:text('queued')");
    check(/position \d+/.test(await page.locator("section.run").innerText()), `solid-color run ${run3Id}: queued, with its position, while no daemon runs`);
    await page.click("section.run button:text('Cancel')");
    await page.waitForSelector("[data-testid=run-status]:text('cancelled')");
    check((await json(`${base}/v1/runs/${encodeURIComponent(run3Id)}`)).status === "cancelled", "cancel: the page's Cancel cancels the queued run");

    // --- tokens: a second server over the same directory that asks for one.
    const tokens = join(tmp, "tokens");
    writeFileSync(tokens, "page-test-token-0123456789\n");
    const guarded = await start("comfyd-serve-tokens", COMFYD, [...serveArgs, "--tokens", tokens], /serving at (http:\/\/[^/\s]+)\//);
    const gbase = guarded.match[1];
    await page.goto(`${gbase}/#/r/${encodeURIComponent(runId)}`);
    await page.waitForSelector("#token");
    check(true, "tokens: a 401 brings up the token prompt");
    await page.fill("#token", "page-test-token-0123456789");
    await page.click("form.token button[type=submit]");
    await page.waitForSelector("[data-testid=run-status]:text('done')");
    const gimg = page.locator("img[data-testid=output-image]").first();
    await gimg.waitFor();
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await gimg.elementHandle());
    check((await gimg.getAttribute("src")).startsWith("blob:"), "tokens: with the token, the run and its image (fetched with the token) load");

    check(pageErrors.length === 0, `no errors in the page${pageErrors.length ? `: ${pageErrors.join("; ")}` : ""}`);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

function walk(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );
}

main().then(
  () => {
    console.log("# browser test passed");
    process.exit(0);
  },
  (e) => {
    failed = true;
    console.error(e.stack || String(e));
    console.error(`# logs kept in ${tmp}`);
    process.exit(1);
  },
);
