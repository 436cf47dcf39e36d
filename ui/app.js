// Quire's reviewer workbench: plain JavaScript over the public /v1 API, no framework, no build.
// Every value that comes from a document or the API is put on the page as text (textContent
// through `h`), never as HTML. The API key lives in this tab's sessionStorage only.
"use strict";

const store = window.sessionStorage;
const state = {
  key: store.getItem("quire.key"),
  reviewer: store.getItem("quire.reviewer"),
  timer: null,
  // Bumped by every navigation: a view still loading for an older one renders nothing.
  gen: 0,
  blobs: [],
  stickyFlash: false,
  queue: freshQueue(),
  action: null,
};

function freshQueue() {
  return { items: [], cursor: null, current: 0, selected: new Set(), filters: {}, total: 0 };
}

/** Whether the view that started at navigation `gen` is still the one on screen. */
const current = (gen) => gen === state.gen;

// ---- DOM helpers: elements and text nodes only ------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "value") e.value = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

/** A value as a reader sees it: text as it is, anything else as JSON, nothing as a dash. */
function show(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

const main = () => document.getElementById("main");

function render(...nodes) {
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function flash(message, kind) {
  const f = document.getElementById("flash");
  f.className = kind || "";
  f.textContent = message || "";
}

// ---- the API ------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + state.key };
  if (state.reviewer) headers["X-Reviewer"] = state.reviewer;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (r.status === 401 && state.key) {
    signOut("The key was refused: sign in again.");
  }
  if (!r.ok) {
    const e = new Error((data && data.message) || r.statusText);
    e.status = r.status;
    throw e;
  }
  return data;
}

/** Downloads an authenticated answer (a CSV export) as a file. */
async function download(path, filename) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  if (!r.ok) throw new Error("Download failed: " + r.status);
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function guard(f) {
  return async (...args) => {
    try {
      await f(...args);
    } catch (e) {
      flash(e.message, "error");
    }
  };
}

// ---- sign-in ------------------------------------------------------------------------------

function signOut(message) {
  store.removeItem("quire.key");
  store.removeItem("quire.reviewer");
  state.key = null;
  state.reviewer = null;
  state.queue = freshQueue();
  stopPolling();
  location.hash = "";
  route();
  if (message) flash(message, "error");
}

function signInView() {
  const key = h("input", { type: "password", id: "key", autocomplete: "off", required: true });
  const name = h("input", { type: "text", id: "reviewer", maxlength: 100, placeholder: "the key's name" });
  const form = h(
    "form",
    { class: "signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("label", {}, "API key", key),
    h("label", {}, "Your name, as decisions will record it", name),
    h("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const reviewer = name.value.trim();
    // Headers carry printable ASCII only: a name beyond it could not be sent.
    if (reviewer && !/^[\x20-\x7e]{1,100}$/.test(reviewer)) {
      throw new Error("The name must be 1-100 printable ASCII characters.");
    }
    state.key = key.value.trim();
    state.reviewer = reviewer || null;
    try {
      await api("GET", "/v1/schemas?limit=1");
    } catch (e) {
      state.key = null;
      throw new Error("This key cannot read: " + e.message);
    }
    store.setItem("quire.key", state.key);
    if (state.reviewer) store.setItem("quire.reviewer", state.reviewer);
    flash("", "");
    location.hash = "#/pipelines";
    route();
  }));
  render(form);
  key.focus();
}

// ---- pipelines ----------------------------------------------------------------------------

function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

function poll(f, ms, gen) {
  stopPolling();
  if (current(gen)) state.timer = setTimeout(() => { if (current(gen)) f(); }, ms);
}

function bar(done, total, error) {
  const pct = total ? Math.round((done * 100) / total) : 0;
  return h("span", { class: "bar" + (error ? " error" : ""), title: pct + "%" },
    h("span", { style: null, dataset: { pct: String(pct) } }));
}

/** Widths set from script (a style attribute in markup would need an unsafe CSP). */
function sizeBars(root) {
  for (const s of root.querySelectorAll(".bar > span[data-pct]")) {
    s.style.width = s.dataset.pct + "%";
  }
}

async function pipelinesView(gen) {
  const list = await api("GET", "/v1/pipelines?limit=50");
  const rows = await Promise.all(list.data.map(async (p) => {
    const pr = p.status === "active" ? await api("GET", `/v1/pipelines/${p.id}/progress`) : null;
    const done = pr ? pr.completedDocuments + pr.errorDocuments : p.document_count;
    return h("tr", { dataset: { id: p.id } },
      h("td", {}, h("a", { href: `#/pipelines/${p.id}` }, p.name)),
      h("td", {}, h("span", { class: "status " + p.status }, p.status)),
      h("td", {}, bar(done, p.document_count), " ", `${done} / ${p.document_count}`),
      h("td", {}, p.schema.name),
      h("td", { class: "muted" }, p.created_at));
  }));
  if (!current(gen)) return;
  const table = h("table", { class: "grid", id: "pipelines" },
    h("tr", {}, ["Pipeline", "Status", "Progress", "Spec", "Created"].map((t) => h("th", {}, t))),
    rows);
  render(h("h1", {}, "Pipelines"),
    list.data.length ? table : h("p", { class: "muted" }, "No pipelines yet."));
  sizeBars(main());
  if (list.data.some((p) => p.status === "active")) poll(guard(() => pipelinesView(gen)), 1500, gen);
}

async function pipelineView(id, gen) {
  const [p, pr, results, reruns] = await Promise.all([
    api("GET", `/v1/pipelines/${id}`),
    api("GET", `/v1/pipelines/${id}/progress`),
    api("GET", `/v1/pipelines/${id}/results?include=cells&limit=50`),
    api("GET", `/v1/pipelines/${id}/reruns`),
  ]);
  if (!current(gen)) return;
  const phases = h("table", { class: "grid", id: "phases" },
    h("tr", {}, ["Phase", "Progress", "Running", "Pending", "Errors"].map((t) => h("th", {}, t))),
    pr.phases.map((ph) => h("tr", {},
      h("td", {}, ph.name),
      h("td", {}, bar(ph.completed, pr.totalDocuments, ph.errors > 0), " ", `${ph.completed} / ${pr.totalDocuments}`),
      h("td", {}, ph.running), h("td", {}, ph.pending), h("td", {}, ph.errors))));
  const cols = results.columns.map((c) => c.field_key);
  const held = (cell) => cell && ["blocked", "pending_review", "waiting"].includes(cell.status);
  const table = h("table", { class: "grid", id: "results" },
    h("tr", {}, h("th", {}, "Document"), h("th", {}, "Status"),
      results.columns.map((c) => h("th", {}, c.display_name))),
    results.data.map((r) => h("tr", {},
      h("td", {}, r.filename), h("td", {}, r.status),
      cols.map((f) => {
        const cell = r.cells && r.cells[f];
        return held(cell)
          ? h("td", { class: "held", title: cell.status }, "held: " + cell.status.replace("_", " "))
          : h("td", {}, show(r.fields[f]));
      }))));
  const active = p.status === "active";
  const rerunPanel = rerunForm(id, active);
  const product = h("div", { id: "product" },
    h("button", {
      type: "button", disabled: active || null, id: "make-product",
      onclick: guard(async () => {
        const dp = await api("POST", `/v1/pipelines/${id}/data-product`, {});
        const pid = dp.dataProduct.id;
        product.replaceChildren(
          h("span", {}, "Data product ", h("strong", {}, dp.dataProduct.name), ": "),
          h("button", { type: "button", id: "csv-plain", onclick: guard(() => download(`/v1/data-products/${pid}/export/plain`, `${pid}.csv`)) }, "Download CSV"),
          " ",
          h("button", { type: "button", id: "csv-audit", onclick: guard(() => download(`/v1/data-products/${pid}/export/audit`, `${pid}-audit.csv`)) }, "Download audit CSV"));
      }),
    }, "Create the data product"));
  render(
    h("h1", {}, p.name, " ", h("span", { class: "status " + p.status, id: "run-status" }, p.status)),
    h("p", { class: "muted" }, `Generation ${p.generation} · ${p.document_count} documents · pending review: ${results.pending_review_count}`),
    active ? h("button", { type: "button", class: "danger", id: "cancel", onclick: guard(async () => {
      await api("POST", `/v1/pipelines/${id}/cancel`, {});
      flash("Cancelled.", "ok");
      state.stickyFlash = true;
      route();
    }) }, "Cancel the run") : null,
    h("h2", {}, "Phases"), phases,
    h("h2", {}, "Results"), table,
    results.pagination.has_more
      ? h("p", { class: "muted" }, `The first ${results.data.length} of ${results.pagination.total} documents; the data product's CSV has them all.`)
      : null,
    h("h2", {}, "Rerun"), rerunPanel,
    h("h2", {}, "Rerun history"),
    reruns.data.length
      ? h("table", { class: "grid", id: "reruns" },
        h("tr", {}, ["Generation", "From", "Documents", "Requested", "By", "Outcome"].map((t) => h("th", {}, t))),
        reruns.data.map((r) => h("tr", {},
          h("td", {}, r.generation), h("td", {}, r.from_phase), h("td", {}, r.enqueued),
          h("td", {}, r.requested_at), h("td", {}, r.requested_by), h("td", {}, show(r.outcome)))))
      : h("p", { class: "muted" }, "No reruns yet."),
    h("h2", {}, "Data product"), product);
  sizeBars(main());
  if (active) poll(guard(() => pipelineView(id, gen)), 1500, gen);
}

function rerunForm(id, active) {
  const phase = h("select", { id: "rerun-phase" },
    ["transfer", "extraction", "resolution", "validation"].map((v) => h("option", { value: v }, v)));
  phase.value = "resolution";
  const plan = h("div", { id: "rerun-plan" });
  const planBtn = h("button", {
    type: "button", id: "rerun-preview", disabled: active || null,
    onclick: guard(async () => {
      const from = phase.value;
      const p = await api("POST", `/v1/pipelines/${id}/rerun`, { from_phase: from, dry_run: true });
      plan.replaceChildren(h("div", { class: "plan" },
        h("p", {}, `Rerun from ${from}: ${p.plan.documents} documents, phases ${p.plan.phases.join(", ")}.`),
        h("p", {}, `${p.plan.keptBlockedFields} blocked fields stay held; ${p.plan.preservedDecisions} decisions are preserved.`),
        h("button", {
          type: "button", class: "primary", id: "rerun-confirm",
          onclick: guard(async () => {
            const r = await api("POST", `/v1/pipelines/${id}/rerun`, { from_phase: from });
            flash(`Rerun started: ${r.enqueued} documents.`, "ok");
            state.stickyFlash = true;
            route();
          }),
        }, "Confirm the rerun")));
    }),
  }, "Show the plan");
  return h("div", {}, h("div", { class: "filters" }, h("label", {}, "From phase", phase), planBtn,
    active ? h("span", { class: "muted" }, "(the run is still active)") : null), plan);
}

// ---- the review queue ---------------------------------------------------------------------

function queueQuery(cursor) {
  const q = new URLSearchParams({ order: "asc", limit: "50" });
  for (const [k, v] of Object.entries(state.queue.filters)) if (v) q.set(k, v);
  if (cursor) q.set("cursor", cursor);
  return "/v1/field-reviews?" + q.toString();
}

async function loadQueue(more) {
  const page = await api("GET", queueQuery(more ? state.queue.cursor : null));
  state.queue.items = more ? state.queue.items.concat(page.data) : page.data;
  state.queue.cursor = page.pagination.next_cursor;
  state.queue.total = page.pagination.total;
  if (!more) state.queue.current = Math.min(state.queue.current, Math.max(page.data.length - 1, 0));
}

async function queueView(gen) {
  stopPolling();
  const [summary, pipelines] = await Promise.all([
    api("GET", "/v1/field-reviews/summary"),
    api("GET", "/v1/pipelines?limit=100"),
  ]);
  await loadQueue(false);
  if (!current(gen)) return;
  const f = state.queue.filters;
  const pick = h("select", { id: "f-pipeline" }, h("option", { value: "" }, "every pipeline"),
    pipelines.data.map((p) => h("option", { value: p.id }, p.name)));
  pick.value = f.pipeline_id || "";
  const field = h("input", { id: "f-field", placeholder: "field_key", value: f.field_key || "" });
  const gate = h("select", { id: "f-gate" }, h("option", { value: "" }, "any gate"));
  const loadGates = guard(async () => {
    gate.replaceChildren(h("option", { value: "" }, "any gate"));
    if (!pick.value) return;
    const p = await api("GET", `/v1/pipelines/${pick.value}`);
    const gates = await api("GET", `/v1/schemas/${p.schema.id}/validation-stages`);
    for (const g of gates.data) gate.append(h("option", { value: g.id }, g.name));
    gate.value = f.stage_id || "";
  });
  pick.addEventListener("change", loadGates);
  await loadGates();
  const trigger = h("select", { id: "f-trigger" }, h("option", { value: "" }, "any trigger"),
    h("option", { value: "gate" }, "gate"), h("option", { value: "declarative" }, "declarative"));
  trigger.value = f.trigger || "";
  const filters = h("form", { class: "filters", id: "filters" },
    h("label", {}, "Pipeline", pick), h("label", {}, "Field", field), h("label", {}, "Gate", gate),
    h("label", {}, "Trigger", trigger), h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    state.queue.filters = { pipeline_id: pick.value, field_key: field.value.trim(), stage_id: gate.value, trigger: trigger.value };
    state.queue.current = 0;
    state.queue.selected.clear();
    await queueView(state.gen);
  }));
  const counts = h("p", { id: "counts" },
    `${state.queue.total} waiting here · ${summary.total} in the whole queue (gate ${summary.byTrigger.gate}, declarative ${summary.byTrigger.declarative})`);
  const bulk = h("div", { class: "filters" },
    h("input", { id: "bulk-reason", placeholder: "reason (optional)" }),
    h("button", { type: "button", id: "bulk-approve", onclick: guard(() => bulk_resolve("approve")) }, "Approve selected"),
    h("button", { type: "button", id: "bulk-override", onclick: guard(() => bulk_resolve("override")) }, "Override selected"),
    h("span", { class: "muted" }, "j/k move · x select · Enter open · ? keys"));
  render(h("h1", {}, "Review queue"), filters, counts, bulk, queueTable(),
    state.queue.cursor ? h("button", { type: "button", id: "more", onclick: guard(async () => { await loadQueue(true); redrawQueue(); }) }, "Load more") : null);
}

function queueTable() {
  const q = state.queue;
  return h("table", { class: "grid", id: "queue" },
    h("tr", {}, ["", "Field", "Value", "Why", "Document", "Pipeline", "Since"].map((t) => h("th", {}, t))),
    q.items.map((it, i) => {
      const key = it.pipeline_document_id + "/" + it.field_key;
      const box = h("input", { type: "checkbox", dataset: { key }, checked: q.selected.has(key) || null,
        onchange: (ev) => { ev.target.checked ? q.selected.add(key) : q.selected.delete(key); } });
      return h("tr", { class: i === q.current ? "current" : null, dataset: { key } },
        h("td", {}, box),
        h("td", {}, h("a", { href: `#/queue/${it.pipeline_document_id}/${it.field_key}` }, it.field_display_name)),
        h("td", { class: "value-cell" }, show(it.current_value)),
        h("td", {}, show(it.reason)),
        h("td", {}, it.document.name), h("td", {}, it.pipeline.name),
        h("td", { class: "muted" }, it.requested_at));
    }));
}

function redrawQueue() {
  const old = document.getElementById("queue");
  if (old) old.replaceWith(queueTable());
  const cur = document.querySelector("#queue tr.current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

async function bulk_resolve(action) {
  const items = [...state.queue.selected].map((k) => {
    const [pd, field] = k.split("/");
    return { pipeline_document_id: pd, field_key: field };
  });
  if (!items.length) throw new Error("Select items first (x, or the boxes).");
  const reason = document.getElementById("bulk-reason").value.trim();
  const body = { items, action };
  if (reason) body.reason = reason;
  const r = await api("POST", "/v1/field-reviews/bulk-resolve", body);
  state.queue.selected.clear();
  flash(`${r.resolved} resolved, ${r.failed} failed.`, r.failed ? "error" : "ok");
  await queueView(state.gen);
}

// ---- one item -------------------------------------------------------------------------------

/** A typed input for a field's value, and how to read it back (an error message if invalid). */
function valueInput(field, current) {
  const t = field.data_type;
  let input;
  if (t === "boolean") {
    input = h("select", { id: "value" }, h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
    input.value = String(current === true);
  } else if (t === "number" || t === "integer") {
    // Text with a numeric keyboard, so that what was typed can be checked and explained.
    input = h("input", { id: "value", type: "text", inputmode: "decimal", value: current ?? "" });
  } else if (t === "date") {
    input = h("input", { id: "value", type: "date", value: typeof current === "string" ? current : "" });
  } else if (t === "array" || t === "object") {
    input = h("textarea", { id: "value", rows: 3 }, current === null || current === undefined ? "" : JSON.stringify(current));
  } else {
    input = h("input", { id: "value", type: "text", value: current ?? "" });
  }
  const read = () => {
    const raw = input.value.trim();
    if (raw === "") return { error: t === "number" || t === "integer" ? "A number, please." : "Type a value." };
    switch (t) {
      case "number": { const n = Number(raw); return Number.isFinite(n) ? { value: n } : { error: "A number, please." }; }
      case "integer": { const n = Number(raw); return Number.isInteger(n) ? { value: n } : { error: "A whole number, please." }; }
      case "boolean": return { value: raw === "true" };
      case "date": return /^\d{4}-\d{2}-\d{2}$/.test(raw) ? { value: raw } : { error: "A date as YYYY-MM-DD, please." };
      case "currency": return /^[A-Z]{3}$/.test(raw) ? { value: raw } : { error: "A currency code such as EUR, please." };
      case "array": case "object": {
        try { const v = JSON.parse(raw); return (t === "array" ? Array.isArray(v) : v && typeof v === "object" && !Array.isArray(v)) ? { value: v } : { error: `JSON of type ${t}, please.` }; }
        catch { return { error: "Valid JSON, please." }; }
      }
      default: return { value: raw };
    }
  };
  return { input, read };
}

async function sourceView(d) {
  const span = d.matchedSpan;
  const doc = d.item.document.id;
  if (span && span.page) {
    try {
      const pageInfo = await api("GET", `/v1/documents/${doc}/pages/${span.page}`);
      const pg = pageInfo.page || pageInfo;
      const r = await fetch(`/v1/documents/${doc}/pages/${span.page}/image`, { headers: { Authorization: "Bearer " + state.key } });
      if (r.ok) {
        const src = URL.createObjectURL(await r.blob());
        state.blobs.push(src);
        const img = h("img", { alt: `page ${span.page}`, src });
        const wrap = h("div", { class: "page", id: "page" }, img);
        if (span.bbox && pg.width && pg.height) {
          const [x0, y0, x1, y1] = span.bbox;
          const box = h("div", { class: "box", id: "source-box" });
          box.style.left = (100 * x0 / pg.width) + "%";
          box.style.top = (100 * y0 / pg.height) + "%";
          box.style.width = (100 * (x1 - x0) / pg.width) + "%";
          box.style.height = (100 * (y1 - y0) / pg.height) + "%";
          wrap.append(box);
        }
        return h("div", { class: "source" }, h("p", { class: "muted" }, `Page ${span.page}`), wrap);
      }
    } catch (e) {
      // The text below still shows where the value stands.
    }
  }
  const full = await api("GET", `/v1/documents/${doc}?include=text`);
  const text = full.text || "";
  const needle = span ? span.text : null;
  // Where the span says it is when the text there is the span's, else its first occurrence.
  const placed = span && Number.isInteger(span.start) && text.slice(span.start, span.end) === needle;
  const at = placed ? span.start : needle ? text.indexOf(needle) : -1;
  const pre = h("pre", { class: "text", id: "source-text" });
  if (at >= 0) {
    pre.append(text.slice(0, at), h("mark", { id: "source-mark" }, needle), text.slice(at + needle.length));
  } else {
    pre.append(text);
  }
  return h("div", { class: "source" },
    span && span.approximate ? h("p", { class: "muted" }, "Approximate location") : null, pre);
}

async function itemView(pd, field, gen) {
  stopPolling();
  const d = await api("GET", `/v1/field-reviews/${pd}/${field}`);
  const source = await sourceView(d);
  if (!current(gen)) return;
  state.action = null;
  // An array field's element being corrected (its index), or null for the whole value.
  state.element = null;
  const held = ["blocked", "pending_review"].includes(d.item.status);
  const { input, read } = valueInput(d.field, d.item.current_value);
  const valueLabel = h("span", { id: "value-label" }, `Value (${d.field.data_type})`);
  const reason = h("input", { id: "reason", placeholder: "reason (optional)" });
  const error = h("p", { class: "error-text", id: "value-error" });
  const buttons = {};
  const choose = (action) => {
    state.action = action;
    for (const [a, b] of Object.entries(buttons)) b.classList.toggle("chosen", a === action);
    if (action === "correct" || action === "override") input.focus(); else reason.focus();
  };
  let busy = false;
  const confirm = guard(async () => {
    const action = state.action;
    if (!action) throw new Error("Choose an action first: a, c or o.");
    // One decision per confirmation: a second Enter while the first is out does nothing.
    if (busy) return;
    const body = { action };
    const element = state.element;
    if (element !== null && action !== "correct") {
      error.textContent = "One element is corrected (c); approve and override decide the whole field.";
      return;
    }
    if (element !== null) {
      // The element as JSON: an object of the table's columns.
      let v;
      try { v = JSON.parse(input.value.trim()); } catch { v = undefined; }
      if (!v || typeof v !== "object" || Array.isArray(v)) { error.textContent = "The element as a JSON object, please."; input.focus(); return; }
      body.corrected_value = v;
    } else if (action === "correct" || (action === "override" && input.value.trim() !== "" && input.value.trim() !== show(d.item.current_value))) {
      const v = read();
      if (v.error) { error.textContent = v.error; input.focus(); return; }
      body.corrected_value = v.value;
    }
    error.textContent = "";
    if (reason.value.trim()) body.reason = reason.value.trim();
    busy = true;
    submit.disabled = true;
    try {
      const addressed = element === null ? field : encodeURIComponent(`${field}[${element}]`);
      await api("POST", `/v1/field-reviews/${pd}/${addressed}/resolve`, body);
    } finally {
      busy = false;
      submit.disabled = false;
    }
    flash(`${d.field.display_name}: ${action} recorded.`, "ok");
    // Recorded either way; only a reviewer still on this item is taken to the next.
    if (!current(gen)) return;
    state.stickyFlash = true;
    await nextItem(pd, field, gen);
  });
  const submit = h("button", { type: "submit", class: "primary", id: "confirm" }, "Confirm (Enter)");
  for (const [a, label] of [["approve", "Approve (a)"], ["correct", "Correct (c)"], ["override", "Override (o)"], ["reopen", "Reopen (r)"]]) {
    if ((a === "reopen") === held) continue;
    buttons[a] = h("button", { type: "button", id: "act-" + a, onclick: () => choose(a) }, label);
  }
  const form = h("form", { class: "actions", id: "actions" },
    h("div", { class: "filters" }, Object.values(buttons)),
    held ? h("label", {}, valueLabel, input) : null, error,
    h("label", {}, "Reason", reason),
    submit);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); confirm(); });
  const verdicts = h("ul", { id: "verdicts" }, d.verdicts.map((v) => h("li", { class: "verdict " + v.outcome },
    `${v.stageName || v.stageId}: ${v.outcome}`, v.reason ? ` — ${v.reason}` : "",
    Array.isArray(v.mechanisms) && v.mechanisms.length
      ? h("ul", {}, v.mechanisms.map((m) => h("li", {}, `${m.validatorType || "check"}: ${m.verdict || ""}`, m.reasoning ? ` — ${m.reasoning}` : "")))
      : null)));
  // The elements of a table that a check failed: each can be corrected on its own.
  const failing = (d.failingElements || []).length
    ? h("table", { class: "grid", id: "failing" },
      h("tr", {}, ["Element", "Value now", "Read from", ""].map((t) => h("th", {}, t))),
      d.failingElements.map((e) => h("tr", {},
        h("td", {}, `${field}[${e.index}]`), h("td", {}, show(e.value)), h("td", {}, show(e.row ? e.row.source_text : null)),
        h("td", {}, held ? h("button", { type: "button", class: "fix-element", id: `fix-${e.index}`, onclick: () => {
          state.element = e.index;
          input.value = JSON.stringify(e.value);
          valueLabel.textContent = `Value (${field}[${e.index}], a JSON object)`;
          choose("correct");
        } }, "Correct this element") : null))))
    : null;
  const history = h("table", { class: "grid", id: "history" },
    h("tr", {}, ["Version", "Source", "Value", "Read from"].map((t) => h("th", {}, t))),
    d.cellHistory.map((c) => h("tr", {}, h("td", {}, c.cellVersion), h("td", {}, c.source), h("td", {}, show(c.value)), h("td", {}, show(c.sourceText)))));
  const decisions = d.priorDecisions.length
    ? h("ul", { id: "decisions" }, d.priorDecisions.map((x) => h("li", {}, `${x.decidedAt} ${x.decidedByName}: ${x.action} ${show(x.priorValue)} → ${show(x.finalValue)}`, x.reason ? ` (${x.reason})` : "")))
    : h("p", { class: "muted" }, "No decisions yet.");
  render(
    h("p", {}, h("a", { href: "#/queue" }, "← queue (Esc)")),
    h("h1", {}, d.field.display_name, " ", h("span", { class: "status" }, d.item.status)),
    h("p", { class: "muted" }, `${d.item.document.name} · ${d.item.pipeline.name} · ${show(d.item.reason)}`),
    h("div", { class: "detail" },
      h("div", {}, source),
      h("div", {},
        h("p", {}, "Held value: ", h("span", { class: "value", id: "held-value" }, show(d.item.current_value))),
        form,
        failing ? h("h2", {}, "Failing elements") : null, failing,
        h("h2", {}, "Verdicts"), verdicts,
        h("h2", {}, "Waiting on this field"),
        d.waitingDependents.length ? h("p", { id: "dependents" }, d.waitingDependents.join(", ")) : h("p", { class: "muted" }, "Nothing waits."),
        h("h2", {}, "History"), history,
        h("h2", {}, "Decisions"), decisions)));
  state.itemKeys = { choose, confirm, held };
}

/** After a decision: the next item of the queue as it stands, or the queue when none is left
 * (unless the reviewer went elsewhere meanwhile: `gen` is the item view's). */
async function nextItem(pd, field, gen) {
  const q = state.queue;
  const key = pd + "/" + field;
  q.selected.delete(key);
  const same = (it) => it.pipeline_document_id === pd && it.field_key === field;
  const at = q.items.findIndex(same);
  let next = null;
  if (at >= 0) {
    // The decided item leaves the loaded list; the one after it (or before) is next.
    q.items.splice(at, 1);
    q.total = Math.max((q.total || 1) - 1, 0);
    next = q.items[at] || q.items[at - 1] || null;
  }
  if (!next) {
    await loadQueue(false);
    // The reviewer went elsewhere while the queue loaded: stay where they went.
    if (!current(gen)) return;
    next = q.items.find((it) => !same(it)) || null;
  }
  if (next) {
    q.current = q.items.indexOf(next);
    location.hash = `#/queue/${next.pipeline_document_id}/${next.field_key}`;
  } else {
    location.hash = "#/queue";
  }
}

// ---- the decision log -----------------------------------------------------------------------

async function decisionsView(gen) {
  stopPolling();
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const pipeline = params.get("pipeline_id") || "";
  const q = new URLSearchParams({ limit: "100" });
  if (pipeline) q.set("pipeline_id", pipeline);
  const [log, pipelines] = await Promise.all([
    api("GET", "/v1/field-reviews/decisions?" + q.toString()),
    api("GET", "/v1/pipelines?limit=100"),
  ]);
  if (!current(gen)) return;
  const pick = h("select", { id: "d-pipeline" }, h("option", { value: "" }, "every pipeline"),
    pipelines.data.map((p) => h("option", { value: p.id }, p.name)));
  pick.value = pipeline;
  pick.addEventListener("change", () => { location.hash = "#/decisions" + (pick.value ? "?pipeline_id=" + pick.value : ""); });
  const exportPath = "/v1/field-reviews/decisions/export" + (pipeline ? "?pipeline_id=" + pipeline : "");
  render(h("h1", {}, "Decision log"),
    h("div", { class: "filters" }, h("label", {}, "Pipeline", pick),
      h("button", { type: "button", id: "decisions-csv", onclick: guard(() => download(exportPath, "field-review-decisions.csv")) }, "Export CSV")),
    h("p", { class: "muted" }, log.total > log.entries.length
      ? `The newest ${log.entries.length} of ${log.total} decisions; the CSV has them all.`
      : `${log.total} decisions`),
    h("table", { class: "grid", id: "decision-log" },
      h("tr", {}, ["When", "Who", "Action", "Field", "Document", "Before", "After", "Reason"].map((t) => h("th", {}, t))),
      log.entries.map((e) => h("tr", {}, h("td", {}, e.decidedAt), h("td", {}, e.decidedByName), h("td", {}, e.action),
        h("td", {}, e.fieldKey), h("td", {}, e.documentName), h("td", {}, show(e.priorValue)), h("td", {}, show(e.finalValue)), h("td", {}, show(e.reason))))));
}

// ---- routing and keys -------------------------------------------------------------------------

async function route() {
  stopPolling();
  state.gen += 1;
  const gen = state.gen;
  for (const url of state.blobs.splice(0)) URL.revokeObjectURL(url);
  if (state.stickyFlash) state.stickyFlash = false; else flash("", "");
  const signedIn = Boolean(state.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? (state.reviewer || "signed in") : "";
  if (!signedIn) return signInView();
  const path = (location.hash.replace(/^#/, "").split("?")[0] || "/pipelines").split("/").filter(Boolean);
  for (const a of document.querySelectorAll("#nav a[data-nav]")) a.classList.toggle("active", a.dataset.nav === path[0]);
  state.itemKeys = null;
  try {
    if (path[0] === "pipelines" && path[1]) await pipelineView(path[1], gen);
    else if (path[0] === "queue" && path[2]) await itemView(path[1], path[2], gen);
    else if (path[0] === "queue") await queueView(gen);
    else if (path[0] === "decisions") await decisionsView(gen);
    else await pipelinesView(gen);
  } catch (e) {
    // A refused key has already signed out and said so.
    if (current(gen) && e.status !== 401) flash(e.message, "error");
  }
}

function onKey(ev) {
  if (!state.key) return;
  const focus = document.activeElement;
  const tag = focus && focus.tagName;
  // In the decision form, Enter on a select (and Ctrl+Enter in a JSON value) confirms, as
  // Enter in a text input submits the form.
  if (state.itemKeys && ev.key === "Enter" && focus && focus.closest("#actions")
      && (tag === "SELECT" || (tag === "TEXTAREA" && ev.ctrlKey))) {
    ev.preventDefault();
    state.itemKeys.confirm();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(tag);
  const help = document.getElementById("keys");
  if (ev.key === "?" && !typing) { ev.preventDefault(); help.open ? help.close() : help.showModal(); return; }
  const path = location.hash.replace(/^#\/?/, "").split("/");
  if (path[0] !== "queue") return;
  const q = state.queue;
  if (state.itemKeys) {
    if (ev.key === "Escape") { location.hash = "#/queue"; return; }
    if (typing) return;
    const k = state.itemKeys;
    if (ev.key === "a" && k.held) { ev.preventDefault(); k.choose("approve"); }
    else if (ev.key === "c" && k.held) { ev.preventDefault(); k.choose("correct"); }
    else if (ev.key === "o" && k.held) { ev.preventDefault(); k.choose("override"); }
    else if (ev.key === "r" && !k.held) { ev.preventDefault(); k.choose("reopen"); }
    else if (ev.key === "Enter") { ev.preventDefault(); k.confirm(); }
    else if (ev.key === "j" || ev.key === "k") {
      const at = q.items.findIndex((it) => it.pipeline_document_id === path[1] && it.field_key === path[2]);
      const next = q.items[at + (ev.key === "j" ? 1 : -1)];
      if (next) { q.current = q.items.indexOf(next); location.hash = `#/queue/${next.pipeline_document_id}/${next.field_key}`; }
    }
    return;
  }
  if (typing || !q.items.length) return;
  if (ev.key === "j") { q.current = Math.min(q.current + 1, q.items.length - 1); redrawQueue(); }
  else if (ev.key === "k") { q.current = Math.max(q.current - 1, 0); redrawQueue(); }
  else if (ev.key === "x") {
    const it = q.items[q.current];
    const key = it.pipeline_document_id + "/" + it.field_key;
    q.selected.has(key) ? q.selected.delete(key) : q.selected.add(key);
    redrawQueue();
  } else if (ev.key === "Enter" || ev.key === "a" || ev.key === "c" || ev.key === "o") {
    const it = q.items[q.current];
    const then = ev.key === "Enter" ? null : { a: "approve", c: "correct", o: "override" }[ev.key];
    ev.preventDefault();
    location.hash = `#/queue/${it.pipeline_document_id}/${it.field_key}`;
    if (then) {
      const wait = setInterval(() => { if (state.itemKeys) { clearInterval(wait); state.itemKeys.choose(then); } }, 20);
      setTimeout(() => clearInterval(wait), 5000);
    }
  }
}

document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
document.addEventListener("keydown", onKey);
route();
