// runhistory web UI. Every page is the same HTML shell; this script reads the page's kind
// from <body data-page> and builds it from the JSON endpoints under /api/, so what a page
// shows is exactly what a script can fetch. No framework; charts use plotly.js, served by
// runhistory from the installed `plotly` package and loaded only by pages with charts.
"use strict";

const page = JSON.parse(document.body.dataset.page);
const main = document.getElementById("main");
const POLL_MS = 1500; // a running run's charts refresh this often
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4"];

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const enc = encodeURIComponent;
const runUrl = (entity, project, runId) => `/${enc(entity)}/${enc(project)}/runs/${enc(runId)}`;
const apiRun = (entity, project, runId) => `/api${runUrl(entity, project, runId)}`;

function pathParts(path) {
  const [entity, project, runId] = path.split("/");
  return { entity, project, runId };
}

function pathUrl(path, suffix = "") {
  const p = pathParts(path);
  return runUrl(p.entity, p.project, p.runId) + suffix;
}

class ApiError extends Error {
  constructor(status, error) {
    super(error ? `${error.code}: ${error.message}` : `HTTP ${status}`);
    this.status = status;
  }
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body && body.error);
  return body;
}

function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtValue(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}`, text: state });
}

// An archived version keeps the state it had when a rewind archived it; one archived while
// its run was running never runs again, so it says so instead of showing "running".
function versionBadge(v) {
  if (v.archived && v.state === "running") {
    return el("span", { class: "state state-archived", text: "archived (was running)" });
  }
  return stateBadge(v.state);
}

function setTitle(text) {
  document.title = `${text} · runhistory`;
}

function crumbs(items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(
    ...items.flatMap((item, i) => [
      el("span", { class: "sep", "aria-hidden": "true", text: i ? "/" : "" }),
      item.href
        ? el("a", { href: item.href, text: item.text })
        : el("span", { "aria-current": "page", text: item.text }),
    ]),
  );
}

function runCrumbs(extra) {
  const projectUrl = `/${enc(page.entity)}/${enc(page.project)}`;
  const items = [
    { text: page.entity },
    { text: page.project, href: projectUrl },
    { text: page.run_id, href: extra ? runUrl(page.entity, page.project, page.run_id) : null },
  ];
  if (extra) items.push({ text: extra });
  crumbs(items);
}

function tabs(active) {
  const base = runUrl(page.entity, page.project, page.run_id);
  const links = [
    ["overview", "Overview", base],
    ["charts", "Charts", `${base}/charts`],
    ["lineage", "Lineage", `${base}/lineage`],
    ["audit", "Audit", `${base}/audit`],
  ];
  return el(
    "nav",
    { class: "tabs", "aria-label": "Run pages" },
    links.map(([kind, label, href]) =>
      el("a", { href, "aria-current": kind === active ? "page" : null, text: label }),
    ),
  );
}

function showError(error) {
  const message = error instanceof ApiError && error.status === 404
    ? `Not found. ${error.message}`
    : `Could not load this page: ${error.message}`;
  main.replaceChildren(el("p", { class: "error", role: "alert", text: message }));
}

function keyValueTable(mapping, caption, emptyText) {
  const entries = Object.entries(mapping || {});
  if (!entries.length) return el("p", { class: "muted", text: emptyText });
  return el(
    "table",
    { class: "kv" },
    el("caption", { class: "visually-hidden", text: caption }),
    el("tbody", {}, entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }),
      el("td", { text: fmtValue(v) })))),
  );
}

function table(headers, rows, attrs) {
  return el(
    "table",
    attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
    rows instanceof Node ? rows : el("tbody", {}, rows),
  );
}

function section(title, ...content) {
  const id = `section-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return el("section", { "aria-labelledby": id }, el("h2", { id, text: title }), ...content);
}

function artifactsTable(list, emptyText) {
  if (!list || !list.length) return el("p", { class: "muted", text: emptyText });
  return table(
    ["Name", "Type", "Version", "Size", "Digest", "URI"],
    list.map((a) => el("tr", {},
      el("td", { text: a.name }), el("td", { text: a.type }), el("td", { text: a.version }),
      el("td", { text: a.size }), el("td", {}, el("code", { text: a.digest })),
      el("td", { text: a.uri }))),
  );
}

function versionsTable(run) {
  return table(
    ["Version", "Immutable ID", "State", "Rows", "Last step", "Rewound to step", "Started", "Archived"],
    run.versions.map((v) => el("tr", {},
      el("td", {}, v.archived
        ? el("a", { href: pathUrl(run.path, `/versions/${v.version}`), text: `v${v.version}` })
        : el("span", {}, `v${v.version} `, el("span", { class: "muted", text: "(live)" }))),
      el("td", {}, el("code", { class: "small", text: v.immutable_id })),
      el("td", {}, versionBadge(v)),
      el("td", { text: v.rows }),
      el("td", { text: fmtValue(v.last_step) }),
      el("td", { text: fmtValue(v.rewound_to_step) }),
      el("td", { text: fmtTime(v.started_at) }),
      el("td", { text: fmtTime(v.archived_at) }))),
    { class: "versions" },
  );
}

// A button that copies `value` to the clipboard, and says so (to screen readers too). `what`
// names the value in its label and status; `id` is the button's, `${id}-status` its status's.
function copyButton(value, what, id) {
  const status = el("span", { id: `${id}-status`, class: "visually-hidden", role: "status" });
  const button = el("button", { type: "button", id, class: "copy",
    "aria-label": `Copy ${what} ${value}`, text: "Copy" });
  button.addEventListener("click", async () => {
    let copied = false;
    try {
      await navigator.clipboard.writeText(value);
      copied = true;
    } catch (_) {
      // Without clipboard permission: the old way, through a selected text field.
      const field = el("textarea", { class: "visually-hidden" });
      field.value = value;
      document.body.append(field);
      field.select();
      copied = document.execCommand("copy");
      field.remove();
    }
    button.textContent = copied ? "Copied" : "Copy failed";
    status.textContent = copied ? `${what} copied to the clipboard` : "";
    setTimeout(() => { button.textContent = "Copy"; }, 2500);
  });
  return el("span", {}, " ", button, status);
}

// An immutable version ID with its copy button; `id` names the code element.
function immutableId(value, id) {
  return el("span", {}, el("code", { id, text: value }),
    copyButton(value, "immutable ID", `copy-${id}`));
}

// "Forked From": the source run of a fork (at a step of a version, with that version's
// immutable ID), or for a rewound run the archived version its last rewind replaced.
function forkedFrom(run) {
  if (run.forked_from) {
    const f = run.forked_from;
    return el("span", { id: "forked-from" },
      el("a", { href: pathUrl(f.run), class: "forked-from-run", text: f.run }),
      ` at step ${f.step}, `,
      el("a", { href: pathUrl(f.run, `/versions/${f.version}`), class: "forked-from-version",
        text: `version ${f.version}` }),
      " (", el("code", { class: "forked-from-id", text: f.immutable_id }), ")");
  }
  if (run.rewound_from) {
    const r = run.rewound_from;
    return el("span", { id: "forked-from" },
      el("a", { href: pathUrl(run.path, `/versions/${r.version}`), class: "forked-from-version",
        text: `archived version ${r.version}` }),
      ` of this run, rewound to step ${r.step}`);
  }
  return el("span", { id: "forked-from", class: "muted", text: "–" });
}

// ---- charts --------------------------------------------------------------------------------

let plotlyLoading = null;
function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = el("script", { src: "/static/vendor/plotly.min.js" });
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error("plotly.js could not be loaded"));
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

// The traces of one run's series: the inherited prefix of a fork (dotted, grey-toned) and
// the run's own rows (solid), so a fork's borrowed history never passes for its own.
function seriesTraces(history, key, label, color) {
  const s = history.series[key];
  if (!s) return [];
  const traces = [];
  if (s.inherited && s.inherited.steps.length) {
    const source = history.forked_from ? history.forked_from.run : "source";
    traces.push({
      x: s.inherited.steps, y: s.inherited.values, mode: "lines", type: "scatter",
      name: `${label} inherited from ${source}`, meta: "inherited",
      line: { color, dash: "dot", width: 2.5 }, opacity: 0.7,
    });
  }
  const own = s.own || s;
  traces.push({
    x: own.steps, y: own.values, mode: "lines", type: "scatter", name: label, meta: "own",
    line: { color, width: 2 },
  });
  return traces;
}

function rewindShapes(history) {
  const shapes = [];
  const annotations = [];
  for (const r of history.rewinds || []) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: r.step, x1: r.step, y0: 0, y1: 1,
      line: { color: "#9a6700", dash: "dash", width: 1.5 } });
    annotations.push({ x: r.step, y: 1, xref: "x", yref: "paper", yanchor: "top", xanchor: "left",
      xshift: 3, showarrow: false, text: `rewind (v${r.version} archived)`,
      font: { size: 10, color: "#9a6700" } });
  }
  if (history.inherited_until !== null && history.inherited_until !== undefined) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: history.inherited_until,
      x1: history.inherited_until, y0: 0, y1: 1, line: { color: "#57606a", dash: "dot", width: 1 } });
    annotations.push({ x: history.inherited_until, y: 1, xref: "x", yref: "paper",
      yanchor: "top", xanchor: "right", xshift: -3, showarrow: false, text: "fork point",
      font: { size: 10, color: "#57606a" } });
  }
  return { shapes, annotations };
}

// Where an overlaid fork of the run shown first branched off it: a dotted line at its step.
function forkMark(marks, history, first, label) {
  const f = history.forked_from;
  if (!f || f.run !== first.run) return;
  marks.shapes.push({ type: "line", xref: "x", yref: "paper", x0: f.step, x1: f.step, y0: 0, y1: 1,
    line: { color: "#57606a", dash: "dot", width: 1 } });
  marks.annotations.push({ x: f.step, y: 0.92, xref: "x", yref: "paper", yanchor: "top",
    xanchor: "left", xshift: 3, showarrow: false, text: `${label} (v${f.version})`,
    font: { size: 10, color: "#57606a" } });
}

// A chart per metric key, comparing runs; `fetchHistory(path, extraParams)` gives history
// documents. Zooming (drag, or the step-range form for keyboards) re-asks the server for that
// range, so a zoomed view of a 1M-step run shows its detail, not the overview's buckets.
class ChartBoard {
  constructor(container, options) {
    this.container = container;
    this.runs = options.runs; // [{path, label, version}]
    this.keys = options.keys;
    this.range = null; // [min_step, max_step] or null
    this.live = options.live || false;
    this.timer = null;
    this.charts = new Map();
  }

  async historyOf(run) {
    const p = pathParts(run.path);
    const params = new URLSearchParams({ keys: this.keys.join(","), max_points: "1000" });
    if (run.version) params.set("version", run.version);
    if (this.range) {
      params.set("min_step", Math.max(0, Math.floor(this.range[0])));
      params.set("max_step", Math.max(0, Math.ceil(this.range[1])));
    }
    return getJSON(`${apiRun(p.entity, p.project, p.runId)}/history?${params}`);
  }

  async render() {
    const Plotly = await loadPlotly();
    const histories = await Promise.all(this.runs.map((run) => this.historyOf(run)));
    for (const key of this.keys) {
      let box = this.charts.get(key);
      if (!box) {
        const id = `chart-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
        box = el("div", { class: "chart", id, role: "img", "aria-label": `chart of ${key} over _step` });
        this.container.append(el("figure", { class: "chart-figure" },
          el("figcaption", { text: key }), box));
        this.charts.set(key, box);
        box.dataset.key = key;
      }
      const traces = histories.flatMap((h, i) =>
        seriesTraces(h, key, this.runs[i].label, COLORS[i % COLORS.length]));
      const first = histories[0];
      const marks = rewindShapes(first);
      histories.slice(1).forEach((h, i) => forkMark(marks, h, first, this.runs[i + 1].label));
      const layout = {
        height: 300, margin: { l: 50, r: 20, t: 24, b: 80 },
        xaxis: { title: { text: "_step" }, range: this.range || undefined, autorange: !this.range },
        yaxis: { automargin: true }, hovermode: "x unified", showlegend: true,
        legend: { orientation: "h", y: -0.3, yanchor: "top" }, shapes: marks.shapes, annotations: marks.annotations,
        uirevision: this.range ? this.range.join(":") : "all",
      };
      await Plotly.react(box, traces, layout, { displaylogo: false, responsive: true });
      // For people using scripts and for tests: what is drawn, by part.
      const s = first.series[key] || {};
      box.dataset.inheritedPoints = s.inherited ? s.inherited.steps.length : 0;
      box.dataset.ownPoints = s.own ? s.own.steps.length : 0;
      box.dataset.rows = first.rows;
      if (!box.dataset.zoomBound) {
        box.dataset.zoomBound = "1";
        box.on("plotly_relayout", (change) => this.onZoom(change));
      }
    }
    this.container.dataset.rendered = String(Number(this.container.dataset.rendered || 0) + 1);
    this.updateLive(histories[0]);
    return histories;
  }

  onZoom(change) {
    if (change["xaxis.autorange"]) {
      this.setRange(null);
    } else if (change["xaxis.range[0]"] !== undefined) {
      this.setRange([change["xaxis.range[0]"], change["xaxis.range[1]"]]);
    }
  }

  setRange(range) {
    const same = JSON.stringify(range) === JSON.stringify(this.range);
    this.range = range;
    if (!same) this.render().catch(showError);
  }

  // While the run is running, poll; a finished or crashed run stops the polling.
  updateLive(history) {
    const indicator = document.getElementById("live");
    const running = this.live && history.state === "running" && history.live;
    if (indicator) {
      indicator.textContent = running ? "● live: updating every 1.5 s" : "";
    }
    clearTimeout(this.timer);
    if (running) this.timer = setTimeout(() => this.render().catch(showError), POLL_MS);
  }
}

function zoomForm(board) {
  const from = el("input", { type: "number", min: "0", id: "zoom-from", inputmode: "numeric" });
  const to = el("input", { type: "number", min: "0", id: "zoom-to", inputmode: "numeric" });
  return el("form", { class: "zoom", "aria-label": "Step range",
    onsubmit: (event) => {
      event.preventDefault();
      if (from.value !== "" && to.value !== "") board.setRange([Number(from.value), Number(to.value)]);
    } },
  el("label", { for: "zoom-from", text: "Steps from" }), from,
  el("label", { for: "zoom-to", text: "to" }), to,
  el("button", { type: "submit", text: "Zoom" }),
  el("button", { type: "button", id: "zoom-reset", text: "Reset zoom",
    onclick: () => { from.value = ""; to.value = ""; board.setRange(null); } }));
}

// ---- pages ---------------------------------------------------------------------------------

async function homePage() {
  setTitle("runhistory");
  crumbs([]);
  const data = await getJSON("/api/projects");
  const intro = data.entity
    ? `The projects of entity ${data.entity}, which your key reads. `
    : "The projects on this server. ";
  main.replaceChildren(
    el("h1", { text: "Projects" }),
    el("p", { class: "muted", text: intro + "A project's page lists its runs; each run has an " +
      "overview, charts, its lineage and its audit trail." }),
    data.projects.length
      ? table(["Entity", "Project", "Runs", "Last change"], data.projects.map((p) =>
        el("tr", { "data-project": `${p.entity}/${p.project}` },
          el("td", { text: p.entity }),
          el("td", {}, el("a", { href: `/${enc(p.entity)}/${enc(p.project)}`, class: "project-link",
            text: p.project })),
          el("td", { class: "num", text: p.runs }),
          el("td", { text: fmtTime(p.updated_at) }))), { class: "projects", id: "projects" })
      : el("p", { class: "muted", id: "projects", text: "No projects yet: log a run and it " +
        "appears here." }),
  );
}

function sparkline(spark) {
  const width = 120;
  const height = 28;
  if (!spark || spark.values.length < 2) return el("span", { class: "muted", text: "–" });
  const xs = spark.steps;
  const ys = spark.values;
  const [x0, x1] = [xs[0], xs[xs.length - 1]];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => (x1 === x0 ? 0 : ((x - x0) / (x1 - x0)) * (width - 2) + 1);
  const sy = (y) => (y1 === y0 ? height / 2 : height - 1 - ((y - y0) / (y1 - y0)) * (height - 2));
  const points = xs.map((x, i) => `${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${spark.key}: ${fmtValue(ys[0])} to ${fmtValue(ys[ys.length - 1])}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}

// The project page reads the runs a page at a time (keyset pages: "Load more" continues
// after the last run shown), and the sparklines of only the runs shown.
const RUNS_PER_PAGE = 50;
const RUN_ORDERS = [
  ["+created_at", "Oldest first"], ["-created_at", "Newest first"],
  ["-updated_at", "Recently updated"], ["+updated_at", "Least recently updated"],
];

async function projectPage() {
  const { entity, project } = page;
  setTitle(`${entity}/${project}`);
  crumbs([{ text: entity }, { text: project }]);
  const params = new URLSearchParams(location.search);
  const order = params.get("order") || RUN_ORDERS[0][0];
  const base = `/api/${enc(entity)}/${enc(project)}`;
  const listingUrl = (cursor) => `${base}/runs?${new URLSearchParams({
    per_page: RUNS_PER_PAGE, order, ...(cursor ? { cursor } : {}) })}`;
  const first = await getJSON(listingUrl(null));
  const metric = params.get("metric") || first.metrics[0] || "";
  const metrics = new Set(first.metrics);
  if (metric) metrics.add(metric);

  const reload = (changes) => {
    const next = new URLSearchParams(location.search);
    for (const [name, value] of Object.entries(changes)) next.set(name, value);
    location.search = `?${next}`;
  };
  const picker = el("select", { id: "metric", name: "metric",
    onchange: () => reload({ metric: picker.value }) });
  const fillPicker = () => picker.replaceChildren(...[...metrics].sort().map((m) =>
    el("option", { value: m, selected: m === metric, text: m })));
  fillPicker();
  const orderPicker = el("select", { id: "order", name: "order",
    onchange: () => reload({ order: orderPicker.value }) },
  RUN_ORDERS.map(([value, label]) => el("option", { value, selected: value === order, text: label })));

  const compareBox = el("div", { id: "compare-charts", class: "charts" });
  const checks = [];
  const body = el("tbody", {});
  const count = el("p", { class: "muted", id: "run-count", role: "status" });
  const more = el("button", { type: "button", id: "load-more", text: "Load more runs" });
  let cursor = first.next_cursor;

  function row(run) {
    const check = el("input", { type: "checkbox", checked: checks.length < 8, value: run.path,
      "aria-label": `compare ${run.run_id}` });
    checks.push(check);
    return el("tr", { "data-run": run.run_id },
      el("td", {}, check),
      el("td", {}, el("a", { href: pathUrl(run.path), class: "run-link", text: run.name }),
        run.name !== run.run_id ? el("div", { class: "muted small" }, el("code", { text: run.run_id })) : null),
      el("td", {}, stateBadge(run.state)),
      el("td", { class: "num", text: fmtValue(run.last_step) }),
      el("td", { text: fmtTime(run.created_at) }),
      el("td", {}, run.forked_from
        ? el("span", {}, el("a", { href: pathUrl(run.forked_from.run), text: pathParts(run.forked_from.run).runId }),
          ` @ ${run.forked_from.step} (v${run.forked_from.version})`)
        : el("span", { class: "muted", text: run.version > 1 ? `rewound (v${run.version})` : "–" })),
      el("td", { class: "spark" }, el("span", { class: "muted", text: metric ? "…" : "–" })));
  }

  // The sparklines of one page's runs, drawn into their rows.
  async function drawSparklines(runs) {
    if (!metric || !runs.length) return;
    const query = new URLSearchParams({ key: metric, runs: runs.map((r) => r.run_id).join(",") });
    const found = await getJSON(`${base}/sparklines?${query}`);
    for (const run of runs) {
      const cell = body.querySelector(`tr[data-run="${CSS.escape(run.run_id)}"] td.spark`);
      if (cell) cell.replaceChildren(sparkline(found.sparklines[run.run_id]));
    }
  }

  async function show(listing) {
    body.append(...listing.runs.map(row));
    for (const m of listing.metrics) metrics.add(m);
    fillPicker();
    cursor = listing.next_cursor;
    const shown = body.children.length;
    count.textContent = `${shown} run${shown === 1 ? "" : "s"}${cursor ? " shown; more to load" : ""}`;
    more.hidden = !cursor;
    await drawSparklines(listing.runs);
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await show(await getJSON(listingUrl(cursor)));
    } catch (error) {
      count.textContent = `Could not load more runs: ${error.message}`;
    } finally {
      more.disabled = false;
    }
  });

  main.replaceChildren(
    el("h1", { text: `${entity}/${project}` }),
    count,
    first.runs.length
      ? el("div", {},
        el("div", { class: "controls" },
          el("label", { for: "metric", text: "Metric" }), picker,
          el("label", { for: "order", text: "Order" }), orderPicker),
        table(["Compare", "Run", "State", "Step", "Created", "Forked from", metric || "Sparkline"], body,
          { class: "runs", id: "runs" }),
        el("div", { class: "controls" }, more),
        section("Compare runs",
          el("p", { class: "muted", text: `${metric} of the checked runs, overlaid.` }),
          el("button", { type: "button", id: "compare", text: "Update comparison",
            onclick: () => compare() }),
          compareBox))
      : el("p", { class: "muted", text: "No runs in this project yet." }),
  );
  await show(first);
  if (!first.runs.length) count.textContent = "";

  let board = null;
  async function compare() {
    const chosen = checks.filter((c) => c.checked).map((c) => c.value);
    compareBox.replaceChildren();
    if (!metric || !chosen.length) return;
    board = new ChartBoard(compareBox, {
      keys: [metric], runs: chosen.map((path) => ({ path, label: pathParts(path).runId })),
    });
    await board.render();
  }
  if (metric && first.runs.length) await compare();
}

async function overviewPage() {
  runCrumbs(null);
  const run = await getJSON(apiRun(page.entity, page.project, page.run_id));
  setTitle(`${run.name} (${run.run_id})`);
  const forks = run.forks.length
    ? el("ul", { id: "forks" }, run.forks.map((f) => el("li", {},
      el("a", { href: pathUrl(f.run), class: "fork-link", text: f.run }),
      ` forked at step ${f.step} of version ${f.source_version}`)))
    : el("p", { class: "muted", id: "forks", text: "No forks." });
  const field = (label, value) => [el("dt", { text: label }), el("dd", {}, value)];
  main.replaceChildren(
    el("h1", {}, run.name, " ", stateBadge(run.state)),
    tabs("overview"),
    el("dl", { class: "fields" },
      field("ID", el("span", {}, el("code", { id: "run-id", text: run.run_id }),
        copyButton(run.run_id, "run ID", "copy-id"))),
      // The live version's: it stays with this version when a rewind archives it, so a fork
      // from it (fork_from="ID?_step=N") gets exactly these rows, config and summary.
      field("Immutable ID", immutableId(run.immutable_id, "immutable-id")),
      field("Path", el("code", { text: run.path })),
      field("Name", run.name),
      field("State", stateBadge(run.state)),
      field("Step", fmtValue(run.last_step)),
      field("Version", `v${run.version}`),
      field("Created", fmtTime(run.created_at)),
      field("Updated", fmtTime(run.updated_at)),
      field("Forked From", forkedFrom(run)),
      run.tags.length ? field("Tags", run.tags.join(", ")) : null,
      run.group ? field("Group", run.group) : null,
      run.job_type ? field("Job Type", run.job_type) : null,
      run.notes ? field("Notes", el("span", { id: "notes", text: run.notes })) : null),
    el("div", { class: "columns" },
      section("Config", keyValueTable(run.config, "Config", "No config.")),
      section("Summary", keyValueTable(run.summary, "Summary", "No summary yet."))),
    section("Versions", versionsTable(run)),
    section("Forks", forks),
    section("Artifacts",
      el("h3", { text: "Produced" }), artifactsTable(run.artifacts.produced, "None produced."),
      el("h3", { text: "Used" }), artifactsTable(run.artifacts.used, "None used.")),
  );
}

// The forks of a run and of its versions, their forks too, as one list.
function flattenForks(nodes) {
  return nodes.flatMap((d) => [d, ...flattenForks(d.descendants || [])]);
}

// A checkbox that overlays one history (a run, or a version of one) on the charts.
function overlayCheck(id, label, overlay, onchange) {
  return el("label", { class: "check" },
    el("input", { type: "checkbox", id, "data-path": overlay.path,
      "data-version": overlay.version || null, "data-label": overlay.label, onchange }),
    ` ${label}`);
}

async function chartsPage() {
  runCrumbs("charts");
  const run = await getJSON(apiRun(page.entity, page.project, page.run_id));
  setTitle(`charts: ${run.name}`);
  // The project's other runs, a page at a time ("More runs" continues after the last).
  const runsPage = (cursor) => getJSON(`/api/${enc(page.entity)}/${enc(page.project)}/runs?${
    new URLSearchParams({ per_page: RUNS_PER_PAGE, ...(cursor ? { cursor } : {}) })}`);
  const projectRuns = await runsPage(null);
  const archived = run.versions.filter((v) => v.archived);
  const forks = flattenForks(run.forks);
  const forkPaths = new Set(forks.map((f) => f.run));
  const othersOf = (runs) => runs.filter((r) => r.path !== run.path && !forkPaths.has(r.path));
  const box = el("div", { class: "charts", id: "charts" });
  const live = { path: run.path, label: archived.length ? `${run.run_id} v${run.version} (live)` : run.run_id };
  const board = new ChartBoard(box, { keys: run.metrics, runs: [live], live: true });
  // Every checked overlay, in the order of the page: this run's versions, its forks, then
  // the project's other runs. Nothing reloads: the board re-reads the histories it shows.
  const update = () => {
    const checked = [...main.querySelectorAll("fieldset.compare input:checked")];
    board.runs = [live, ...checked.map((i) => ({ path: i.dataset.path, label: i.dataset.label,
      version: i.dataset.version ? Number(i.dataset.version) : null }))];
    board.render().catch(showError);
  };
  const versionChecks = [
    ...archived.map((v) => overlayCheck(`overlay-v${v.version}`,
      `v${v.version} (archived, rewound to step ${v.rewound_to_step})`,
      { path: run.path, version: v.version, label: `${run.run_id} v${v.version} (archived)` }, update)),
    ...forks.map((f) => overlayCheck(`overlay-fork-${pathParts(f.run).runId}`,
      `fork ${f.run} (at step ${f.step} of v${f.source_version})`,
      { path: f.run, label: `fork ${pathParts(f.run).runId}` }, update)),
  ];
  const runCheck = (r) => overlayCheck(`overlay-run-${r.run_id}`, r.run_id,
    { path: r.path, label: r.run_id }, update);
  const compareChecks = othersOf(projectRuns.runs).map(runCheck);
  let cursor = projectRuns.next_cursor;
  const moreRuns = el("button", { type: "button", id: "more-runs", hidden: !cursor,
    text: "More runs" });
  moreRuns.addEventListener("click", async () => {
    moreRuns.disabled = true;
    try {
      const next = await runsPage(cursor);
      cursor = next.next_cursor;
      moreRuns.before(...othersOf(next.runs).map(runCheck));
      moreRuns.hidden = !cursor;
    } catch (error) {
      showError(error);
    } finally {
      moreRuns.disabled = false;
    }
  });
  const legend = el("p", { class: "muted small" },
    "Solid: the run's own rows. Dotted: rows a fork inherited from its source. " +
    "Dashed amber lines: rewinds; dotted grey lines: fork points. Drag to zoom (the server " +
    "sends that range in detail); double-click or Reset zoom to return.");
  main.replaceChildren(
    el("h1", {}, run.name, " ", stateBadge(run.state), " ",
      el("span", { id: "live", class: "live", role: "status" })),
    tabs("charts"),
    legend,
    el("div", { class: "controls" }, zoomForm(board)),
    versionChecks.length ? el("fieldset", { class: "compare", id: "compare-versions" },
      el("legend", { text: "Compare with this run's archived versions and forks" }), versionChecks) : null,
    compareChecks.length || cursor ? el("fieldset", { class: "compare", id: "compare-runs" },
      el("legend", { text: "Overlay other runs of the project" }), compareChecks, moreRuns) : null,
    run.metrics.length ? box : el("p", { class: "muted", text: "No numeric metrics logged yet." }),
  );
  if (run.metrics.length) await board.render();
}

async function versionPage() {
  runCrumbs(`version ${page.version}`);
  const v = await getJSON(`${apiRun(page.entity, page.project, page.run_id)}/versions/${page.version}`);
  setTitle(`${v.run.run_id} v${v.version}`);
  const runLink = el("a", { href: pathUrl(v.run.path), text: v.run.path });
  const status = v.archived
    ? el("p", { id: "version-status" }, `Archived version ${v.version} of `, runLink,
      `: rewound to step ${v.rewound_to_step} on ${fmtTime(v.archived_at)}; replaced by `,
      v.replaced_by === v.run.version
        ? el("a", { href: pathUrl(v.run.path), text: `version ${v.replaced_by} (live)` })
        : el("a", { href: pathUrl(v.run.path, `/versions/${v.replaced_by}`), text: `version ${v.replaced_by}` }),
      ".")
    : el("p", { id: "version-status" }, `Version ${v.version} is the live version of `, runLink, ".");
  const box = el("div", { class: "charts", id: "charts" });
  main.replaceChildren(
    el("h1", {}, `${v.run.name} · version ${v.version} `, versionBadge(v)),
    tabs(null),
    status,
    el("dl", { class: "fields" },
      el("dt", { text: "Immutable ID" }), el("dd", {}, immutableId(v.immutable_id, "immutable-id")),
      el("dt", { text: "Rows" }), el("dd", { text: v.rows }),
      el("dt", { text: "Last step" }), el("dd", { text: fmtValue(v.last_step) }),
      el("dt", { text: "Started" }), el("dd", { text: fmtTime(v.started_at) })),
    el("div", { class: "columns" },
      section("Config as it was", keyValueTable(v.config, "Config", "No config.")),
      section("Summary as it was", keyValueTable(v.summary, "Summary", "No summary."))),
    section("History", v.metrics.length ? box : el("p", { class: "muted", text: "No metrics." })),
    section("Artifacts of this version",
      el("h3", { text: "Produced" }), artifactsTable(v.artifacts.produced, "None produced."),
      el("h3", { text: "Used" }), artifactsTable(v.artifacts.used, "None used.")),
  );
  if (v.metrics.length) {
    const board = new ChartBoard(box, {
      keys: v.metrics, runs: [{ path: v.run.path, label: `v${v.version}`, version: v.version }],
    });
    await board.render();
  }
}

function descendantItems(nodes) {
  if (!nodes.length) return null;
  return el("ul", {}, nodes.map((d) => el("li", {},
    el("a", { href: pathUrl(d.run), class: "node", "data-run": d.run, text: d.run }),
    el("span", { class: "muted", text: ` fork at step ${d.step}` }),
    descendantItems(d.descendants))));
}

async function lineagePage() {
  runCrumbs("lineage");
  const tree = await getJSON(`${apiRun(page.entity, page.project, page.run_id)}/lineage`);
  setTitle(`lineage: ${tree.run}`);
  const versionItems = tree.versions.map((v) => {
    const forks = tree.descendants.filter((d) => d.source_version === v.version);
    const href = v.archived ? pathUrl(tree.run, `/versions/${v.version}`) : pathUrl(tree.run);
    return el("li", {},
      el("a", { href, class: "node version-node", "data-version": v.version, text: `v${v.version}` }),
      el("span", { class: "muted", text: v.archived ? ` archived, rewound to step ${v.rewound_to_step}` : " live" }),
      " ", el("code", { class: "small version-id", text: v.immutable_id }),
      descendantItems(forks));
  });
  let node = el("li", { class: "current" },
    el("a", { href: pathUrl(tree.run), class: "node", "data-run": tree.run, "aria-current": "page",
      text: tree.run }), " ", stateBadge(tree.state),
    el("ul", {}, versionItems));
  // Ancestors come nearest first: wrap the run in its parent, that in its parent, ...
  for (const a of tree.ancestors) {
    node = el("li", {},
      el("a", { href: pathUrl(a.run), class: "node", "data-run": a.run, text: a.run }),
      el("ul", {}, el("li", { class: "edge muted", text: `forked from v${a.version} at step ${a.step}:` }),
        node));
  }
  main.replaceChildren(
    el("h1", { text: `Lineage of ${tree.run}` }),
    tabs("lineage"),
    el("p", { class: "muted" }, "Ancestors above, then the run, its versions and the forks of each " +
      "version (and their forks) below. Every node is a link."),
    el("ul", { class: "tree", id: "tree" }, node),
  );
}

function describePayload(event) {
  const p = event.payload;
  switch (event.type) {
    case "RowsLogged":
    case "Finished":
      return p.row_count
        ? `${p.row_count} row${p.row_count === 1 ? "" : "s"}, steps ${p.steps[0]}..${p.steps[1]}` +
          (p.state ? `; ${p.state}` : "")
        : (p.state ? `${p.state}, exit code ${p.exit_code}` : "no rows");
    case "Created":
      return p.forked_from ? `forked at step ${p.forked_from.step}; config ${JSON.stringify(p.config)}`
        : `config ${JSON.stringify(p.config)}`;
    case "Rewound":
      return `to step ${p.step}; version ${p.archived_version} archived`;
    case "CrashDetected":
      return `crashed: its writer was silent since ${fmtTime(p.silent_since)}, ` +
        `over the ${p.crash_after} s timeout`;
    case "Revived":
      return "running again: its writer was heard from";
    default: {
      const shown = Object.fromEntries(Object.entries(p).filter(([k, v]) =>
        !["writer", "seq"].includes(k) && v !== null));
      return JSON.stringify(shown);
    }
  }
}

async function auditPage() {
  runCrumbs("audit");
  const params = new URLSearchParams(location.search);
  const type = params.get("type") || "";
  const position = params.get("position");
  const base = `${apiRun(page.entity, page.project, page.run_id)}`;
  const query = new URLSearchParams({ limit: "200" });
  if (type) query.set("type", type);
  const listing = await getJSON(`${base}/events?${query}`);
  setTitle(`audit: ${listing.run}`);
  const here = location.pathname;
  const link = (changes) => {
    const next = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === "") next.delete(k); else next.set(k, v);
    }
    const text = next.toString();
    return text ? `${here}?${text}` : here;
  };
  const picker = el("select", { id: "event-type", onchange: () => { location.href = link({ type: picker.value }); } },
    el("option", { value: "", text: "all types" }),
    listing.types.map((t) => el("option", { value: t, selected: t === type, text: t })));
  const body = el("tbody", {});
  const events = [];
  const addRows = (page_) => {
    for (const e of page_.events) {
      events.push(e);
      body.append(el("tr", { "data-position": e.position,
        class: String(e.position) === position ? "selected" : null },
      el("td", { class: "num", text: e.position }),
      el("td", { text: fmtTime(e.timestamp) }),
      el("td", {}, el("code", { text: e.type })),
      el("td", { class: "payload", text: describePayload(e) }),
      el("td", {}, el("a", { href: link({ position: e.position }), class: "as-of-link",
        text: "as of here" }))));
    }
  };
  addRows(listing);
  let next = listing.next_after;
  const more = el("button", { type: "button", id: "more", hidden: !next, text: "Load more",
    onclick: async () => {
      query.set("after", next);
      const page_ = await getJSON(`${base}/events?${query}`);
      addRows(page_);
      next = page_.next_after;
      more.hidden = !next;
    } });
  const asOfBox = el("div", { id: "as-of" });
  main.replaceChildren(
    el("h1", { text: `Audit of ${listing.run}` }),
    tabs("audit"),
    el("div", { class: "controls" }, el("label", { for: "event-type", text: "Event type" }), picker),
    asOfBox,
    table(["Position", "Time", "Type", "What", ""], body, { class: "events", id: "events" }),
    more,
  );
  if (position) await showAsOf(asOfBox, base, Number(position), events, link);
}

async function showAsOf(box, base, position, events, link) {
  const snap = await getJSON(`${base}/as-of?position=${position}`);
  const index = events.findIndex((e) => e.position === position);
  const prev = index > 0 ? events[index - 1] : null;
  const next = index >= 0 && index + 1 < events.length ? events[index + 1] : null;
  const charts = el("div", { class: "charts" });
  box.replaceChildren(section(`As of event ${position}`,
    el("nav", { class: "as-of-nav", "aria-label": "As-of navigation" },
      prev ? el("a", { href: link({ position: prev.position }), id: "as-of-prev", text: `← event ${prev.position}` }) : null,
      " ",
      next ? el("a", { href: link({ position: next.position }), id: "as-of-next", text: `event ${next.position} →` }) : null,
      " ",
      el("a", { href: link({ position: null }), text: "back to now" })),
    el("p", { id: "as-of-rows" }, `${snap.rows} rows, last step ${fmtValue(snap.last_step)}`),
    el("div", { class: "columns" },
      el("div", {}, el("h3", { text: "Summary" }), keyValueTable(snap.summary, "Summary", "No summary.")),
      el("div", {}, el("h3", { text: "Config" }), keyValueTable(snap.config, "Config", "No config."))),
    charts));
  const keys = Object.keys(snap.series);
  if (keys.length) {
    const Plotly = await loadPlotly();
    for (const key of keys) {
      const div = el("div", { class: "chart small-chart" });
      charts.append(el("figure", { class: "chart-figure" }, el("figcaption", { text: key }), div));
      await Plotly.newPlot(div, [{ x: snap.series[key].steps, y: snap.series[key].values,
        mode: "lines", type: "scatter", name: key }],
      { height: 200, margin: { l: 50, r: 20, t: 10, b: 30 } }, { displaylogo: false, responsive: true });
    }
  }
}

function missingPage() {
  setTitle("not found");
  crumbs([]);
  main.replaceChildren(el("h1", { text: page.code === "PERMISSION_DENIED" ? "Not allowed" : "Not found" }),
    page.message ? el("p", { class: "error", role: "alert", id: "missing-reason", text: page.message }) : null,
    el("p", {}, "Pages are ", el("code", { text: "/ENTITY/PROJECT" }), " and ",
      el("code", { text: "/ENTITY/PROJECT/runs/RUN_ID" }), " (with /charts, /lineage, /audit, /versions/N)."));
}

const PAGES = {
  home: homePage, project: projectPage, overview: overviewPage, charts: chartsPage,
  version: versionPage, lineage: lineagePage, audit: auditPage, missing: missingPage,
};

(PAGES[page.kind] || missingPage)()
  .then(() => { document.body.dataset.ready = "1"; })
  .catch((error) => { showError(error); document.body.dataset.ready = "error"; });
