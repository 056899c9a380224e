// The live page: polls the JSON API about once a second and updates the DOM in place (no
// rebuilt tables, so nothing flickers). The selected symbol and window live in the URL
// (?symbol=AAPL&k=3). Nothing here is loaded from anywhere but this server, and every URL is
// relative to the page: it works as well under a path prefix (a proxy's /tradestats/).
"use strict";

const MAX_K = Number(document.body.dataset.maxK) || 8;
const REFRESH_MS = 1000;
const TIMEOUT_MS = 3000;
const CHART_POINTS = 1000;       // up to this many prices the chart draws them one by one
const MAX_BUCKETS = 2000;        // the envelope endpoint's limit
const LABELS = ["min", "max", "avg", "var", "std"];
const SVG = "http://www.w3.org/2000/svg";
const NARROW = window.matchMedia("(max-width: 40rem)");

const state = { symbol: null, k: 1, busy: false, downSince: null, focus: null };
const $ = (id) => document.getElementById(id);

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.symbol = params.get("symbol") || null;
  const k = Number(params.get("k"));
  state.k = Number.isInteger(k) && k >= 1 && k <= MAX_K ? k : 1;
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.symbol !== null) params.set("symbol", state.symbol);
  params.set("k", String(state.k));
  history.replaceState(null, "", "?" + params.toString());
}

// `path` is relative ("symbols", "stats/?..."): under /tradestats/ it is /tradestats/symbols.
async function getJson(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(path, { signal: abort.signal, cache: "no-store" });
    if (response.status >= 500) throw new Error(`HTTP ${response.status}`);
    return { status: response.status, body: await response.json() };
  } finally {
    clearTimeout(timer);
  }
}

function format(value) {
  if (value === null || value === undefined) return "—";
  if (Math.abs(value) >= 1e15 || (value !== 0 && Math.abs(value) < 1e-6)) {
    return value.toExponential(6);
  }
  return String(Number(value.toPrecision(10)));
}

// Six significant digits at most, for narrow screens (the full value is in the cell's title).
function formatCompact(value) {
  if (value === null || value === undefined) return "—";
  const size = Math.abs(value);
  if (size === 0) return "0";
  if (size >= 1e7 || size < 1e-3) return value.toExponential(3).replace(/\.?0+e/, "e").replace("e+", "e");
  return String(Number(value.toPrecision(6)));
}

function setNumber(cell, value) {
  cell.className = "num";
  cell.dataset.value = value === null ? "" : String(value);
  const full = format(value);
  const text = NARROW.matches ? formatCompact(value) : full;
  if (cell.textContent !== text) cell.textContent = text;
  if (text === full) cell.removeAttribute("title");
  else if (cell.title !== full) cell.title = full;
}

// --- symbols: a grid of rows; one of them in the tab order (roving tabindex) -------------------

function symbolRows() {
  return Array.from($("symbols").tBodies[0].rows);
}

function focusRow(row) {
  state.focus = row.dataset.symbol;
  for (const other of symbolRows()) other.tabIndex = other === row ? 0 : -1;
  row.focus();
}

function onSymbolKey(event) {
  const row = event.target.closest("tr");
  if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
  const rows = symbolRows();
  const index = rows.indexOf(row);
  let next;
  switch (event.key) {
    case "ArrowDown": next = rows[Math.min(index + 1, rows.length - 1)]; break;
    case "ArrowUp": next = rows[Math.max(index - 1, 0)]; break;
    case "Home": next = rows[0]; break;
    case "End": next = rows[rows.length - 1]; break;
    case "Enter":
    case " ":
      event.preventDefault();
      select(row.dataset.symbol, state.k);
      return;
    default:
      return;
  }
  event.preventDefault();
  focusRow(next);
}

function renderSymbols(symbols) {
  const body = $("symbols").tBodies[0];
  const names = symbols.map((s) => s.symbol);
  const shown = Array.from(body.rows, (row) => row.dataset.symbol);
  if (names.join("\u0000") !== shown.join("\u0000")) {
    const focused = body.contains(document.activeElement) ? document.activeElement.dataset.symbol : null;
    body.replaceChildren(...symbols.map((s) => {
      const row = document.createElement("tr");
      row.dataset.symbol = s.symbol;
      row.tabIndex = -1;
      row.insertCell().textContent = s.symbol;
      row.insertCell();
      row.insertCell();
      return row;
    }));
    const again = symbolRows().find((row) => row.dataset.symbol === focused);
    if (again) again.focus();
  }
  const rows = symbolRows();
  const roving = rows.find((row) => row.dataset.symbol === state.focus)
    || rows.find((row) => row.dataset.symbol === state.symbol) || rows[0];
  rows.forEach((row, index) => {
    const entry = symbols[index];
    const count = row.cells[1];
    count.className = "num";
    count.dataset.value = String(entry.count);
    const text = entry.count.toLocaleString("en-US");
    if (count.textContent !== text) count.textContent = text;
    setNumber(row.cells[2], entry.last);
    const selected = entry.symbol === state.symbol;
    row.classList.toggle("selected", selected);
    row.setAttribute("aria-selected", String(selected));
    row.tabIndex = row === roving ? 0 : -1;
  });
  $("no-symbols").hidden = symbols.length > 0;
  $("symbols-keys").hidden = symbols.length === 0;
}

// --- windows and their statistics ----------------------------------------------------------------

function buildWindows() {
  const buttons = $("windows");
  const rows = $("stats").tBodies[0];
  for (let k = 1; k <= MAX_K; k++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.k = String(k);
    button.innerHTML = `10<sup>${k}</sup>`;
    button.addEventListener("click", () => select(state.symbol, k));
    buttons.append(button);
    const row = rows.insertRow();
    row.dataset.k = String(k);
    row.insertCell().innerHTML = `<span class="long">last </span>10<sup>${k}</sup>`;
    const missing = row.insertCell();
    missing.colSpan = 5;
    row.addEventListener("click", () => select(state.symbol, k));
  }
}

function renderWindows() {
  for (const button of $("windows").children) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.k) === state.k));
  }
}

function renderStats(results) {
  for (const row of $("stats").tBodies[0].rows) {
    const k = Number(row.dataset.k);
    const stats = results[k - 1];
    row.classList.toggle("selected", k === state.k);
    if (!stats) {
      if (row.cells.length !== 2) {
        while (row.cells.length > 1) row.deleteCell(1);
        row.insertCell().colSpan = 5;
      }
      const cell = row.cells[1];
      cell.className = "missing";
      const text = results.length ? "not enough data" : "";
      if (cell.textContent !== text) cell.textContent = text;
      continue;
    }
    if (row.cells.length !== 6) {
      while (row.cells.length > 1) row.deleteCell(1);
      for (const label of LABELS) row.insertCell().dataset.label = label;
    }
    const values = [stats.min, stats.max, stats.avg, stats.var, Math.sqrt(stats.var)];
    values.forEach((value, i) => setNumber(row.cells[i + 1], value));
  }
}

async function fetchStats(symbol, count) {
  const wanted = [];
  for (let k = 1; k <= MAX_K; k++) {
    if (count < 10 ** k) {
      wanted.push(Promise.resolve(null));
      continue;
    }
    const query = new URLSearchParams({ symbol, k: String(k) });
    wanted.push(getJson(`stats/?${query}`).then((r) => (r.status === 200 ? r.body : null)));
  }
  return Promise.all(wanted);
}

// --- chart: SVG, x in "prices ago" (0 = the last price, at the right), y in price ---------------

// The chart's data: {kind: "prices", prices} (the last up to 1,000 prices, oldest first) or
// {kind: "envelope", ...the envelope endpoint's answer} (the whole window, min/max per bucket).
async function fetchChart(entry) {
  const windowLength = 10 ** state.k;
  if (windowLength > CHART_POINTS && entry.count >= windowLength) {
    const width = $("chart").getBoundingClientRect().width || 800;
    const buckets = Math.max(1, Math.min(MAX_BUCKETS, Math.round(width - 60)));
    const query = new URLSearchParams({ symbol: entry.symbol, k: String(state.k), buckets: String(buckets) });
    const reply = await getJson(`envelope/?${query}`);
    if (reply.status === 200) return { kind: "envelope", ...reply.body };
  }
  if (!entry.count) return null;
  const query = new URLSearchParams({
    symbol: entry.symbol, n: String(Math.max(1, Math.min(entry.count, CHART_POINTS))) });
  const reply = await getJson(`prices/?${query}`);
  return reply.status === 200 ? { kind: "prices", prices: reply.body.prices } : null;
}

// About `count` round steps (1, 2, 5 times a power of ten) covering low..high; `whole`: steps
// of whole numbers only (2.5 times a power of ten allowed then, 25 being whole).
function niceTicks(low, high, count, whole = false) {
  let raw = (high - low) / Math.max(count, 1);
  if (!(raw > 0) || !Number.isFinite(raw)) return { values: [low], decimals: 0 };
  if (whole) raw = Math.max(raw, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const multiples = whole && magnitude >= 10 ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10];
  const step = multiples.map((m) => m * magnitude).find((s) => s >= raw * (1 - 1e-9));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const values = [];
  for (let i = Math.ceil(low / step - 1e-9); i * step <= high + step * 1e-9; i++) {
    values.push(Number((i * step).toFixed(Math.min(decimals, 20))));
  }
  return { values, decimals };
}

function priceLabel(value, decimals, largest) {
  if (largest >= 1e12 || decimals > 8) return value.toExponential(2);
  return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

function agoLabel(value) {
  if (value >= 1e6 && value % 1e6 === 0) return `${value / 1e6}M`;
  if (value >= 1e4 && value % 1e3 === 0) return `${value / 1e3}k`;
  return value.toLocaleString("en-US");
}

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// Ticks replaced only when they change (every second they usually do not).
function renderTicks(group, ticks) {
  const key = JSON.stringify(ticks);
  if (group.dataset.key === key) return;
  group.dataset.key = key;
  group.replaceChildren(...ticks.map((t) => {
    const tick = svgElement("g", { class: "tick", "data-value": t.value });
    tick.append(svgElement("line", t.line), svgElement("text", t.text, t.label));
    return tick;
  }));
}

function setPath(selector, d) {
  const path = $("chart").querySelector(selector);
  if (path.getAttribute("d") !== d) path.setAttribute("d", d);
}

const r1 = (v) => Math.round(v * 10) / 10;

function drawChart(data) {
  const svg = $("chart");
  const box = svg.getBoundingClientRect();
  const width = Math.max(box.width, 100), height = Math.max(box.height, 80);
  svg.setAttribute("viewBox", `0 0 ${r1(width)} ${r1(height)}`);
  const caption = $("chart-caption");
  const windowRect = svg.querySelector(".window");
  const empty = () => {
    for (const selector of [".band", ".line", ".frame"]) setPath(selector, "");
    renderTicks(svg.querySelector(".y-axis"), []);
    renderTicks(svg.querySelector(".x-axis"), []);
    windowRect.setAttribute("width", "0");
    delete svg.dataset.kind;
    caption.textContent = "";
  };
  if (data && data.kind === "envelope") {
    // Until the server's view of the window is complete its oldest buckets are null: chart the
    // newest ones it has (x keeps the whole window) and say so below.
    const known = data.min.map((v, i) => (v === null ? -1 : i)).filter((i) => i >= 0);
    data = { ...data, offset: known.length ? known[0] : 0,
             min: known.map((i) => data.min[i]), max: known.map((i) => data.max[i]) };
  }
  if (!data || (data.kind === "prices" && !data.prices.length) || (data.kind === "envelope" && !data.min.length)) {
    empty();
    return;
  }

  // The points: x in prices ago (oldest = span), y low..high (a line has low = high).
  let span, xs, lows, highs;
  if (data.kind === "prices") {
    const n = data.prices.length;
    span = Math.max(n - 1, 1);
    xs = data.prices.map((_, i) => n - 1 - i);
    lows = highs = data.prices;
  } else {
    const windowLength = 10 ** data.k, bucket = data.bucket_prices, first = Math.floor(data.start / bucket);
    span = windowLength - 1;
    xs = data.min.map((_, j) => {
      const i = j + data.offset;
      const from = Math.max(data.start, (first + i) * bucket);
      const to = Math.min(data.count, (first + i + 1) * bucket) - 1;
      return data.count - 1 - (from + to) / 2;
    });
    lows = data.min;
    highs = data.max;
  }
  let low = Infinity, high = -Infinity;
  for (const v of lows) if (v < low) low = v;
  for (const v of highs) if (v > high) high = v;
  svg.dataset.kind = data.kind;
  svg.dataset.low = String(low);
  svg.dataset.high = String(high);
  svg.dataset.span = String(data.kind === "prices" ? data.prices.length : 10 ** data.k);
  let bottom = low, top = high;
  if (bottom === top) {
    const pad = Math.abs(bottom) * 0.01 || 1;
    bottom -= pad;
    top += pad;
  }

  const narrow = width < 500;
  // At least three labels on each axis: a step that leaves fewer is halved.
  const ticks = (low_, high_, count, whole) => {
    const found = niceTicks(low_, high_, count, whole);
    return found.values.length >= 3 ? found : niceTicks(low_, high_, count * 2, whole);
  };
  const yTicks = ticks(bottom, top, height < 230 ? 4 : 5, false);
  const largest = Math.max(Math.abs(bottom), Math.abs(top));
  const yLabels = yTicks.values.map((v) => priceLabel(v, yTicks.decimals, largest));
  const margin = { left: 10 + 6.3 * Math.max(...yLabels.map((l) => l.length)), right: 14, top: 10, bottom: 36 };
  const plotWidth = width - margin.left - margin.right, plotHeight = height - margin.top - margin.bottom;
  const x = (ago) => r1(margin.left + (1 - ago / span) * plotWidth);
  const y = (v) => r1(margin.top + (top - v) / (top - bottom) * plotHeight);

  renderTicks(svg.querySelector(".y-axis"), yTicks.values.map((v, i) => ({
    value: v, label: yLabels[i],
    line: { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) },
    text: { x: margin.left - 5, y: y(v) + 4, "text-anchor": "end" },
  })));
  const xTicks = ticks(0, span, Math.max(2, Math.floor(plotWidth / (narrow ? 60 : 90))), true).values;
  renderTicks(svg.querySelector(".x-axis"), [
    ...xTicks.map((v) => ({
      value: v, label: agoLabel(v),
      line: { x1: x(v), x2: x(v), y1: margin.top, y2: height - margin.bottom + 4 },
      text: { x: x(v), y: height - margin.bottom + 16, "text-anchor": "middle" },
    })),
    { value: "title", label: "prices ago", line: { x1: 0, x2: 0, y1: 0, y2: 0 },
      text: { x: r1(margin.left + plotWidth / 2), y: height - 5, "text-anchor": "middle", class: "title" } },
  ]);
  setPath(".frame", `M${r1(margin.left)},${r1(margin.top)}V${r1(height - margin.bottom)}H${r1(width - margin.right)}`);

  const windowLength = 10 ** state.k;
  const shadedFrom = data.kind === "envelope" ? margin.left : Math.max(x(Math.min(windowLength - 1, span)), margin.left);
  windowRect.setAttribute("x", String(r1(shadedFrom)));
  windowRect.setAttribute("y", String(margin.top));
  windowRect.setAttribute("width", String(r1(Math.max(width - margin.right - shadedFrom, 0))));
  windowRect.setAttribute("height", String(r1(plotHeight)));

  if (data.kind === "prices") {
    const prices = data.prices;
    setPath(".band", "");
    setPath(".line", prices.length === 1
      ? `M${x(0) - 2},${y(prices[0])}H${x(0)}`
      : prices.map((p, i) => `${i ? "L" : "M"}${x(xs[i])},${y(p)}`).join(""));
    const shown = prices.length.toLocaleString("en-US");
    caption.textContent = windowLength <= prices.length
      ? `The last ${shown} prices, from ${format(low)} to ${format(high)}; shaded: the window of the last ${windowLength.toLocaleString("en-US")}.`
      : `The last ${shown} prices, from ${format(low)} to ${format(high)}; the window of ${windowLength.toLocaleString("en-US")} is longer than the chart (all shaded).`;
  } else {
    // A band from each bucket's lowest to its highest price: upper edge left to right, lower
    // edge back. A single bucket still gets some width.
    const points = xs.length === 1 ? [[span, 0], [0, 0]] : xs.map((ago, i) => [ago, i]);
    const upper = points.map(([ago, i], j) => `${j ? "L" : "M"}${x(ago)},${y(highs[i])}`);
    const lower = points.reverse().map(([ago, i]) => `L${x(ago)},${y(lows[i])}`);
    setPath(".line", "");
    setPath(".band", upper.join("") + lower.join("") + "Z");
    caption.textContent = (data.complete
      ? `The whole window of the last ${windowLength.toLocaleString("en-US")} prices, `
      : `The window of the last ${windowLength.toLocaleString("en-US")} prices (the server is still ` +
        `reading its older part: shown as it comes), `) +
      `from ${format(low)} to ${format(high)}: the lowest and highest price of each of ` +
      `${data.min.length.toLocaleString("en-US")} stretches of ${data.bucket_prices.toLocaleString("en-US")}.`;
  }
}

// --- the loop --------------------------------------------------------------------------------

function select(symbol, k) {
  state.symbol = symbol;
  state.k = k;
  writeUrl();
  renderWindows();
  for (const row of symbolRows()) {
    const selected = row.dataset.symbol === symbol;
    row.classList.toggle("selected", selected);
    row.setAttribute("aria-selected", String(selected));
  }
  refresh();
}

function markUp() {
  state.downSince = null;
  const status = $("status");
  status.classList.remove("down");
  status.textContent = `live · updated ${new Date().toLocaleTimeString("en-GB")}`;
  document.querySelector("main").classList.remove("stale");
}

function markDown(error) {
  if (state.downSince === null) state.downSince = new Date();
  const status = $("status");
  status.classList.add("down");
  status.textContent = `server not answering since ${state.downSince.toLocaleTimeString("en-GB")}` +
    ` (${error.message || error}); retrying every second`;
  document.querySelector("main").classList.add("stale");
}

async function refresh() {
  if (state.busy) {
    state.again = true;   // a selection while a refresh runs: one more right after it
    return;
  }
  state.busy = true;
  state.again = false;
  try {
    const { body } = await getJson("symbols");
    const symbols = body.symbols;
    if (state.symbol === null && symbols.length) {
      state.symbol = symbols[0].symbol;
      writeUrl();
    }
    renderSymbols(symbols);
    const entry = symbols.find((s) => s.symbol === state.symbol);
    $("detail-title").textContent = entry ? entry.symbol
      : state.symbol === null ? "Select a symbol" : `Symbol ${state.symbol} not found`;
    const wanted = { symbol: state.symbol, k: state.k };
    let results = [], chart = null;
    if (entry) {
      [results, chart] = await Promise.all([fetchStats(entry.symbol, entry.count), fetchChart(entry)]);
    }
    if (wanted.symbol === state.symbol && wanted.k === state.k) {
      renderStats(results);
      drawChart(chart);
    } else {
      state.again = true;   // selection changed meanwhile: these answers are for the old one
    }
    markUp();
  } catch (error) {
    markDown(error);
  } finally {
    state.busy = false;
    if (state.again) refresh();
  }
}

readUrl();
buildWindows();
renderWindows();
$("symbols").tBodies[0].addEventListener("keydown", onSymbolKey);
$("symbols").tBodies[0].addEventListener("click", (event) => {
  const row = event.target.closest("tr");
  if (!row) return;
  focusRow(row);
  select(row.dataset.symbol, state.k);
});
refresh();
setInterval(refresh, REFRESH_MS);
window.addEventListener("resize", () => refresh());
