// The live page: polls the JSON API about once a second and updates the DOM in place (no
// rebuilt tables, so nothing flickers). The selected symbol and window live in the URL
// (/?symbol=AAPL&k=3). Nothing here is loaded from anywhere but this server.
"use strict";

const MAX_K = Number(document.body.dataset.maxK) || 8;
const REFRESH_MS = 1000;
const TIMEOUT_MS = 3000;
const CHART_POINTS = 1000;

const state = { symbol: null, k: 1, busy: false, downSince: null };
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

function setNumber(cell, value) {
  cell.classList.remove("missing");
  cell.className = "num";
  cell.dataset.value = value === null ? "" : String(value);
  const text = format(value);
  if (cell.textContent !== text) cell.textContent = text;
}

// --- symbols ---------------------------------------------------------------------------------

function renderSymbols(symbols) {
  const body = $("symbols").tBodies[0];
  const names = symbols.map((s) => s.symbol);
  const shown = Array.from(body.rows, (row) => row.dataset.symbol);
  if (names.join("\u0000") !== shown.join("\u0000")) {
    body.replaceChildren(...symbols.map((s) => {
      const row = body.insertRow();
      row.dataset.symbol = s.symbol;
      row.insertCell().textContent = s.symbol;
      row.insertCell();
      row.insertCell();
      row.addEventListener("click", () => select(s.symbol, state.k));
      return row;
    }));
  }
  Array.from(body.rows).forEach((row, index) => {
    const entry = symbols[index];
    const count = row.cells[1];
    count.className = "num";
    count.dataset.value = String(entry.count);
    const text = entry.count.toLocaleString("en-US");
    if (count.textContent !== text) count.textContent = text;
    setNumber(row.cells[2], entry.last);
    row.classList.toggle("selected", entry.symbol === state.symbol);
  });
  $("no-symbols").hidden = symbols.length > 0;
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
    row.insertCell().innerHTML = `last 10<sup>${k}</sup>`;
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
      for (let i = 0; i < 5; i++) row.insertCell();
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
    wanted.push(getJson(`/stats/?${query}`).then((r) => (r.status === 200 ? r.body : null)));
  }
  return Promise.all(wanted);
}

// --- chart -----------------------------------------------------------------------------------

function drawChart(prices) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const caption = $("chart-caption");
  if (!prices.length) {
    caption.textContent = "";
    return;
  }
  const pad = { left: 8, right: 8, top: 10, bottom: 10 };
  let low = Math.min(...prices), high = Math.max(...prices);
  if (low === high) { low -= 1; high += 1; }
  const x = (i) => pad.left + (prices.length === 1 ? 0.5 : i / (prices.length - 1)) *
    (width - pad.left - pad.right);
  const y = (v) => pad.top + (high - v) / (high - low) * (height - pad.top - pad.bottom);
  const windowLength = 10 ** state.k;
  const start = Math.max(prices.length - windowLength, 0);
  g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--window");
  g.fillRect(x(start), 0, width - x(start), height);
  g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent");
  g.lineWidth = 1.5;
  g.beginPath();
  prices.forEach((price, i) => (i ? g.lineTo(x(i), y(price)) : g.moveTo(x(i), y(price))));
  g.stroke();
  const shown = prices.length.toLocaleString("en-US");
  caption.textContent = windowLength <= prices.length
    ? `The last ${shown} prices, from ${format(low)} to ${format(high)}; shaded: the window of the last ${windowLength.toLocaleString("en-US")}.`
    : `The last ${shown} prices, from ${format(low)} to ${format(high)}; the window of ${windowLength.toLocaleString("en-US")} is longer than the chart (all shaded).`;
}

// --- the loop --------------------------------------------------------------------------------

function select(symbol, k) {
  state.symbol = symbol;
  state.k = k;
  writeUrl();
  renderWindows();
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
  if (state.busy) return;
  state.busy = true;
  try {
    const { body } = await getJson("/symbols");
    const symbols = body.symbols;
    if (state.symbol === null && symbols.length) {
      state.symbol = symbols[0].symbol;
      writeUrl();
    }
    renderSymbols(symbols);
    const entry = symbols.find((s) => s.symbol === state.symbol);
    $("detail-title").textContent = entry ? entry.symbol
      : state.symbol === null ? "Select a symbol" : `Symbol ${state.symbol} not found`;
    if (entry) {
      const query = new URLSearchParams({
        symbol: entry.symbol, n: String(Math.max(1, Math.min(entry.count, CHART_POINTS))) });
      const [results, prices] = await Promise.all([
        fetchStats(entry.symbol, entry.count),
        entry.count ? getJson(`/prices/?${query}`).then((r) => r.body.prices) : [],
      ]);
      renderStats(results);
      drawChart(prices);
    } else {
      renderStats([]);
      drawChart([]);
    }
    markUp();
  } catch (error) {
    markDown(error);
  } finally {
    state.busy = false;
  }
}

readUrl();
buildWindows();
renderWindows();
refresh();
setInterval(refresh, REFRESH_MS);
window.addEventListener("resize", () => refresh());
