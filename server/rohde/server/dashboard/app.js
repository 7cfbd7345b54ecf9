// RoHDE live dashboard. Reads the WebSocket /ws (decisions, status events, calibration cues) and the REST
// routes /models/active (labels, electrode layout), /streams (state, per-channel quality) and /health, /ready.
// Server text only ever reaches the page through textContent; every list is capped, so the page can run for days.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const TOKEN = params.get("token") || "";
  const BASE = new URL(".", location.href); // the server's root as this page sees it (also behind a path prefix)

  const HISTORY_ROWS = 30; // decision-history rows kept (one per change of decision)
  const EVENT_ROWS = 20; // status events kept
  const TIMELINE_DECISIONS = 200; // decisions in the timeline strip (10 s at a 50 ms hop)
  const LATENCY_SAMPLES = 200; // decisions the latency figures are computed over
  const STREAMS_POLL_MS = 1000;
  const HEALTH_POLL_MS = 3000;
  const MODEL_POLL_MS = 15000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STABLE_CONNECTION_MS = 5000; // a connection that lasted this long resets the backoff
  const STALE_DECISION_MS = 2000; // no decision for this long: the shown one is marked stale
  const HEATMAP_STALE_MS = 3500; // no /streams answer for this long: the heatmap is dimmed
  const LEVEL_MIN_UV = 1; // heatmap colour scale (log): this RMS and below is the coldest colour
  const LEVEL_MAX_UV = 1000; // ... and this and above the hottest
  const REJECTED_COLOUR = "#4a5560"; // rejected decisions in the timeline and the history

  const $ = (id) => document.getElementById(id);

  const state = {
    model: null, // /models/active body
    layoutKey: "", // which layout the heatmap cells were built for
    cells: new Map(), // channel -> heatmap cell element
    labelsKey: "", // which labels the probability rows were built for
    probRows: [], // [{label, bar, value}]
    streams: [], // /streams bodies
    selected: params.get("stream") || "", // stream shown
    last: null, // last prediction of the selected stream
    lastAt: 0, // performance.now() when it arrived
    latencies: [],
    decisionTimes: [], // server_time of recent decisions (rate)
    timeline: [], // [{index, rejected}]
    history: [], // [{gesture, rejected, reason, first, last, count, element}]
    ws: null,
    backoffMs: BACKOFF_MIN_MS,
    reconnectTimer: 0,
    ignored: 0, // messages of an unknown kind, or not JSON
    cue: null,
    renderQueued: false,
    unauthorized: false,
    streamsAt: 0, // performance.now() of the last /streams answer (the heatmap's age)
  };

  // ---- REST -----------------------------------------------------------------------------------------
  // `guarded`: a route that needs the read token when the server has one (/health and /ready never do).
  async function getJson(path, guarded = true) {
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(new URL(path, BASE), { headers, cache: "no-store" });
    if (guarded) {
      state.unauthorized = response.status === 401;
      showProblem();
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, body };
  }

  function showProblem() {
    const box = $("problem");
    if (state.unauthorized) {
      box.textContent = TOKEN
        ? "The server refused the token in this page's address (401). Open the page as /?token=<read token> with the server's read token."
        : "The server needs a read token (401). Open this page as /?token=<read token>.";
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  function repeat(task, intervalMs) {
    const run = async () => {
      try {
        await task();
      } catch (error) {
        // The server is down or restarting: the next round tries again; the header says so.
        setServerState("unreachable", "server: unreachable");
      }
      setTimeout(run, intervalMs);
    };
    run();
  }

  async function pollModel() {
    const { status, body } = await getJson("models/active");
    if (status === 200 && body) {
      state.model = body;
    } else if (status === 404) {
      state.model = null;
    }
    renderModel();
    buildHeatmap();
  }

  async function pollStreams() {
    const { status, body } = await getJson("streams");
    if (status !== 200 || !body || !Array.isArray(body.streams)) return;
    state.streams = body.streams;
    state.streamsAt = performance.now();
    // The choice follows the server's list (plus the stream shown), so it never grows without bound.
    const known = new Set(state.streams.map((stream) => stream.stream_id));
    for (const option of [...$("stream-select").options]) {
      if (option.value && !known.has(option.value) && option.value !== state.selected) option.remove();
    }
    for (const stream of state.streams) addStreamOption(stream.stream_id);
    if (!state.selected && state.streams.length) {
      const connected = state.streams.find((s) => s.state === "connected");
      selectStream((connected || state.streams[0]).stream_id);
    }
    renderStream();
    renderHeatmap();
  }

  async function pollHealth() {
    const [health, ready] = await Promise.all([getJson("health", false), getJson("ready", false)]);
    const healthy = health.body && health.body.status === "ok";
    const isReady = ready.status === 200;
    if (!healthy) {
      const errors = health.body ? Object.keys(health.body.errors || {}).join(", ") : "";
      setServerState("degraded", `server: degraded${errors ? " (" + errors + ")" : ""}`);
    } else if (!isReady) {
      setServerState("not-ready", `server: not ready${ready.body && ready.body.reason ? ": " + ready.body.reason : ""}`);
    } else {
      setServerState("ok", `server: ok, v${health.body.version}`);
    }
  }

  function setServerState(key, text) {
    const pill = $("server-state");
    pill.dataset.state = key;
    pill.textContent = text;
  }

  // ---- WebSocket ------------------------------------------------------------------------------------
  function connect() {
    clearTimeout(state.reconnectTimer);
    const url = new URL("ws", BASE);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (TOKEN) url.searchParams.set("token", TOKEN); // browsers cannot set headers on a WebSocket
    setConnection("connecting", "connecting");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      scheduleReconnect("the WebSocket could not be opened");
      return;
    }
    state.ws = ws;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = performance.now();
      setConnection("connected", "connected");
      addEvent("connected", location.host);
    };
    ws.onmessage = (event) => handleMessage(event.data);
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (openedAt && performance.now() - openedAt >= STABLE_CONNECTION_MS) state.backoffMs = BACKOFF_MIN_MS;
      let why = `code ${event.code}`;
      if (event.reason) why += `: ${event.reason}`;
      else if (event.code === 1006 && !openedAt) why += ": refused or unreachable (server down, a wrong token or an origin the server does not allow)";
      if (openedAt) addEvent("disconnected", why);
      scheduleReconnect(why);
    };
  }

  function scheduleReconnect(why) {
    const delay = state.backoffMs * (0.8 + 0.4 * Math.random());
    state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
    setConnection("disconnected", `disconnected (${why}); retrying in ${(delay / 1000).toFixed(1)} s`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function setConnection(key, text) {
    const pill = $("connection");
    pill.dataset.state = key;
    pill.textContent = text;
    queueRender(); // the shown decision turns stale when the connection is gone
  }

  function handleMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (_) {
      state.ignored += 1;
      return;
    }
    if (!message || typeof message !== "object") {
      state.ignored += 1;
      return;
    }
    const kind = message.kind ?? message.type;
    if (kind === "prediction") onPrediction(message);
    else if (kind === "status") onStatus(message);
    else if (kind === "cue") onCue(message);
    else state.ignored += 1; // a newer server may send kinds this page does not know
  }

  function onPrediction(m) {
    if (typeof m.stream_id !== "string" || !Array.isArray(m.probabilities) || !Array.isArray(m.labels) ||
        typeof m.confidence !== "number" || typeof m.latency_ms !== "number") {
      state.ignored += 1;
      return;
    }
    addStreamOption(m.stream_id);
    if (!state.selected) selectStream(m.stream_id);
    if (m.stream_id !== state.selected) return;
    state.last = m;
    state.lastAt = performance.now();
    pushCapped(state.latencies, m.latency_ms, LATENCY_SAMPLES);
    pushCapped(state.decisionTimes, m.server_time, 100);
    pushCapped(state.timeline, { index: m.gesture_index, rejected: m.rejected }, TIMELINE_DECISIONS);
    addToHistory(m);
    queueRender();
  }

  function onStatus(m) {
    const subject = m.stream_id || m.model_name || "";
    addEvent(m.event, [subject, m.detail].filter(Boolean).join(" "));
    if (m.event === "model_changed") pollModel().catch(() => {});
    if (typeof m.event === "string" && m.event.startsWith("stream_")) pollStreams().catch(() => {});
    if (m.event === "server_stopping") setConnection("stopping", "server stopping");
  }

  function onCue(m) {
    if (typeof m.label !== "string" || typeof m.phase !== "string") {
      state.ignored += 1;
      return;
    }
    state.cue = {
      label: m.label,
      phase: m.phase,
      remaining: typeof m.remaining_s === "number" && isFinite(m.remaining_s) ? m.remaining_s : null,
      index: Number.isInteger(m.index) ? m.index : null,
      total: Number.isInteger(m.total) ? m.total : null,
      condition: typeof m.condition === "string" ? m.condition : "clean",
      at: performance.now(),
    };
    renderCue();
  }

  // ---- state helpers --------------------------------------------------------------------------------
  function pushCapped(list, value, cap) {
    list.push(value);
    if (list.length > cap) list.splice(0, list.length - cap);
  }

  function addStreamOption(id) {
    const select = $("stream-select");
    if ([...select.options].some((o) => o.value === id)) return;
    const placeholder = [...select.options].find((o) => o.value === "");
    if (placeholder) placeholder.remove();
    const option = document.createElement("option");
    option.value = id;
    option.textContent = id;
    select.append(option);
    if (id === state.selected) select.value = id;
  }

  function selectStream(id) {
    if (state.selected === id && $("stream-select").value === id) return;
    state.selected = id;
    addStreamOption(id);
    $("stream-select").value = id;
    state.last = null;
    state.latencies = [];
    state.decisionTimes = [];
    state.timeline = [];
    state.history = [];
    $("history").replaceChildren();
    renderStream();
    renderHeatmap();
    queueRender();
  }

  function addToHistory(m) {
    const top = state.history[0];
    if (top && top.gesture === m.gesture && top.rejected === m.rejected && top.reason === m.reject_reason) {
      top.last = m.server_time;
      top.count += 1;
      fillHistoryRow(top);
      return;
    }
    const entry = {
      gesture: m.gesture, rejected: m.rejected, reason: m.reject_reason, first: m.server_time, last: m.server_time,
      count: 1, element: document.createElement("li"),
      colour: m.rejected ? REJECTED_COLOUR : gestureColour(m.gesture_index, m.labels.length),
    };
    fillHistoryRow(entry);
    state.history.unshift(entry);
    $("history").prepend(entry.element);
    while (state.history.length > HISTORY_ROWS) state.history.pop().element.remove();
  }

  function fillHistoryRow(entry) {
    const li = entry.element;
    li.className = entry.rejected ? "rejected" : "accepted";
    const duration = Math.max(0, entry.last - entry.first);
    const swatch = span("swatch", "");
    swatch.style.backgroundColor = entry.colour;
    li.replaceChildren(
      span("time", clock(entry.first)),
      swatch,
      span("what", entry.gesture),
      span("why", entry.rejected ? entry.reason || "rejected" : "accepted"),
      span("count", `${entry.count} × · ${duration.toFixed(1)} s`),
    );
  }

  function addEvent(what, detail) {
    const li = document.createElement("li");
    li.append(span("time", clock(Date.now() / 1000)), span("what", what), span("detail", detail || ""));
    const list = $("events");
    list.prepend(li);
    while (list.children.length > EVENT_ROWS) list.lastElementChild.remove();
  }

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  function clock(unixSeconds) {
    return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function facts(list, rows) {
    const children = [];
    for (const [term, value, className] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (className) dd.className = className;
      children.push(dt, dd);
    }
    list.replaceChildren(...children);
  }

  function quantile(values, q) {
    if (!values.length) return NaN;
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  // ---- rendering ------------------------------------------------------------------------------------
  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => {
      state.renderQueued = false;
      renderDecision();
      renderTimeline();
      renderLatency();
    });
  }

  function renderDecision() {
    const m = state.last;
    const gesture = $("gesture");
    const detail = $("decision-detail");
    if (!m) {
      gesture.textContent = "–";
      gesture.dataset.status = "none";
      detail.textContent = state.selected ? `no decision from ${state.selected} yet` : "no decision yet";
      $("confidence-bar").style.width = "0";
      return;
    }
    const ageMs = performance.now() - state.lastAt;
    const live = $("connection").dataset.state === "connected" && ageMs < STALE_DECISION_MS;
    gesture.textContent = m.gesture;
    gesture.dataset.status = !live ? "stale" : m.rejected ? "rejected" : "accepted";
    let text = `confidence ${m.confidence.toFixed(2)} · window: ${m.window_gesture} · vote over ${m.vote_k}`;
    if (m.rejected) text += ` · rejected: ${m.reject_reason || "?"}`;
    if (!live) text += ` · no decision for ${(ageMs / 1000).toFixed(0)} s`;
    detail.textContent = text;
    $("confidence-bar").style.width = `${(100 * Math.max(0, Math.min(1, m.confidence))).toFixed(1)}%`;
    renderProbabilities(m);
  }

  function renderProbabilities(m) {
    const key = m.labels.join("\u0000");
    const box = $("probabilities");
    if (key !== state.labelsKey) {
      state.labelsKey = key;
      state.probRows = m.labels.map((label) => {
        const name = span("prob-label", label);
        const track = document.createElement("div");
        track.className = "prob-track";
        const bar = document.createElement("div");
        bar.className = "prob-bar";
        track.append(bar);
        const value = span("prob-value", "");
        return { name, bar, value, parts: [name, track, value] };
      });
      box.replaceChildren(...state.probRows.flatMap((row) => row.parts));
    }
    state.probRows.forEach((row, i) => {
      const p = Number(m.probabilities[i]) || 0;
      row.bar.style.width = `${(100 * Math.max(0, Math.min(1, p))).toFixed(1)}%`;
      row.value.textContent = p.toFixed(2);
      row.name.classList.toggle("decision", i === m.gesture_index);
    });
  }

  function gestureColour(index, count) {
    return `hsl(${Math.round((360 * index) / Math.max(1, count))} 65% 55%)`;
  }

  function renderTimeline() {
    const canvas = $("timeline");
    const width = canvas.clientWidth || canvas.width;
    if (canvas.width !== width) canvas.width = width;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    const count = state.last ? state.last.labels.length : 1;
    const step = canvas.width / TIMELINE_DECISIONS;
    const offset = TIMELINE_DECISIONS - state.timeline.length;
    state.timeline.forEach((entry, i) => {
      context.fillStyle = entry.rejected ? REJECTED_COLOUR : gestureColour(entry.index, count);
      const top = entry.rejected ? canvas.height * 0.35 : 0;
      context.fillRect((offset + i) * step, top, Math.ceil(step), canvas.height - top);
    });
  }

  function renderLatency() {
    const m = state.last;
    const times = state.decisionTimes;
    const rate = times.length > 1 ? (times.length - 1) / Math.max(1e-6, times[times.length - 1] - times[0]) : NaN;
    facts($("latency-info"), [
      ["last", m ? `${m.latency_ms.toFixed(1)} ms` : "–"],
      [`median (last ${state.latencies.length})`, state.latencies.length ? `${quantile(state.latencies, 0.5).toFixed(1)} ms` : "–"],
      ["p95", state.latencies.length ? `${quantile(state.latencies, 0.95).toFixed(1)} ms` : "–"],
      ["decisions", isFinite(rate) ? `${rate.toFixed(1)} per second` : "–"],
      ["ignored messages", String(state.ignored)],
    ]);
  }

  function renderModel() {
    const model = state.model;
    if (!model) {
      facts($("model-info"), [["model", "none active"]]);
      return;
    }
    facts($("model-info"), [
      ["name", `${model.name} ${model.version}`],
      ["generation", String(model.generation)],
      ["provider", model.provider],
      ["classes", String(model.labels.length)],
      ["channels", `${model.n_channels} at ${model.fs_hz} Hz`],
      ["windows", `${model.window_ms} ms every ${model.hop_ms} ms`],
      ["layout", model.layout ? model.layout.name : "?"],
    ]);
  }

  function selectedStream() {
    return state.streams.find((s) => s.stream_id === state.selected) || null;
  }

  function renderStream() {
    const stream = selectedStream();
    if (!stream) {
      facts($("stream-info"), [["stream", state.selected || "none yet"]]);
      return;
    }
    const quality = stream.quality;
    facts($("stream-info"), [
      ["id", stream.stream_id],
      ["state", stream.state + (stream.reason ? `: ${stream.reason}` : ""), `state-${stream.state}`],
      ["name", `${stream.name ?? "?"} (${stream.type ?? "?"})`],
      ["source", stream.source_id ?? "?"],
      ["channels", stream.n_channels ? `${stream.n_channels} at ${stream.fs_hz} Hz` : "?"],
      ["samples", String(stream.samples_received)],
      ["windows", String(stream.windows_emitted)],
      ["lost / recovered", `${stream.lost_count} / ${stream.recovered_count}`],
      ["bad channels", quality ? String(quality.bad_channels.length) : "not assessed yet"],
    ]);
  }

  function buildHeatmap() {
    const layout = state.model && state.model.layout;
    const key = layout ? JSON.stringify(layout) : "";
    if (key === state.layoutKey) return;
    state.layoutKey = key;
    state.cells = new Map();
    const box = $("heatmaps");
    if (!layout) {
      box.replaceChildren(span("detail", "no active model, so no electrode layout"));
      return;
    }
    const figures = layout.grids.map((grid, g) => {
      const figure = document.createElement("figure");
      figure.className = "grid-figure";
      const caption = document.createElement("figcaption");
      caption.textContent = `${grid.name} (${grid.channels.length} × ${grid.channels[0]?.length ?? 0})`;
      const cells = document.createElement("div");
      cells.className = "grid-cells";
      cells.style.gridTemplateColumns = `repeat(${grid.channels[0]?.length ?? 1}, 22px)`;
      grid.channels.forEach((row, r) => {
        row.forEach((channel, c) => {
          const cell = document.createElement("div");
          if (channel < 0) {
            cell.className = "cell empty";
          } else {
            cell.className = "cell";
            cell.dataset.channel = String(channel);
            cell.title = `channel ${channel} (grid ${g + 1}, row ${r + 1}, column ${c + 1})`;
            state.cells.set(channel, cell);
          }
          cells.append(cell);
        });
      });
      figure.append(caption, cells);
      return figure;
    });
    box.replaceChildren(...figures);
    renderHeatmap();
  }

  function levelColour(rmsUv) {
    const low = Math.log10(LEVEL_MIN_UV);
    const high = Math.log10(LEVEL_MAX_UV);
    const x = Math.max(0, Math.min(1, (Math.log10(Math.max(rmsUv, 1e-3)) - low) / (high - low)));
    // blue (quiet) -> cyan -> green -> yellow -> red (loud), as the legend
    const hue = 230 - 230 * x;
    const light = 25 + 35 * x;
    return `hsl(${hue.toFixed(0)} 75% ${light.toFixed(0)}%)`;
  }

  function renderHeatmap() {
    $("legend-low").textContent = `≤ ${LEVEL_MIN_UV} µV`;
    $("legend-high").textContent = `≥ ${LEVEL_MAX_UV} µV`;
    const stream = selectedStream();
    const quality = stream && stream.quality;
    const summary = $("quality-summary");
    if (!quality) {
      for (const cell of state.cells.values()) {
        cell.classList.remove("bad");
        cell.style.backgroundColor = "";
      }
      summary.textContent = stream ? "quality not assessed yet" : "no stream";
      return;
    }
    for (const report of quality.channels) {
      const cell = state.cells.get(report.channel);
      if (!cell) continue;
      const bad = report.flags.length > 0;
      cell.classList.toggle("bad", bad);
      cell.style.backgroundColor = levelColour(report.rms_uv);
      cell.title = `channel ${report.channel}: ${report.rms_uv.toFixed(1)} µV RMS` +
        (bad ? `; ${report.flags.join(", ")}` : "");
    }
    const flags = Object.entries(quality.flag_counts || {}).filter(([, n]) => n > 0).map(([f, n]) => `${f} ${n}`);
    summary.textContent = `${quality.bad_channels.length} bad channel(s)` + (flags.length ? ` (${flags.join(", ")})` : "");
  }

  function renderCue() {
    const banner = $("cue-banner");
    const cue = state.cue;
    if (!cue) {
      banner.hidden = true;
      return;
    }
    const elapsed = (performance.now() - cue.at) / 1000;
    // The recorder sends a cue at every phase change: a cue that is long past its end was abandoned.
    const expiry = cue.phase === "done" ? 3 : Math.max(cue.remaining ?? 0, 0) + 5;
    if (elapsed > expiry) {
      state.cue = null;
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    banner.dataset.phase = cue.phase;
    $("cue-label").textContent = cue.phase === "done" ? "calibration done" : cue.label;
    $("cue-phase").textContent = cue.phase === "done" ? "" : cue.phase;
    $("cue-remaining").textContent = cue.remaining === null || cue.phase === "done"
      ? "" : `${Math.max(0, cue.remaining - elapsed).toFixed(1)} s`;
    $("cue-condition").textContent = cue.condition !== "clean" && cue.phase !== "done" ? `(${cue.condition})` : "";
    // `index` counts from 0; a `total` of 0 means the protocol's length is unknown.
    $("cue-progress").textContent = cue.index !== null && cue.total ? `${cue.index + 1} / ${cue.total}` : "";
  }

  // ---- start ----------------------------------------------------------------------------------------
  $("stream-select").addEventListener("change", (event) => selectStream(event.target.value));
  setInterval(() => {
    renderCue();
    // Levels and flags that have not been refreshed are dimmed rather than shown as current.
    const age = performance.now() - state.streamsAt;
    $("heatmaps").classList.toggle("stale", state.streamsAt > 0 && age > HEATMAP_STALE_MS);
    $("quality-age").textContent = state.streamsAt > 0 && age > HEATMAP_STALE_MS
      ? `not updated for ${(age / 1000).toFixed(0)} s` : "";
    queueRender(); // ages the shown decision when nothing arrives
  }, 250);
  renderModel();
  renderStream();
  renderLatency();
  repeat(pollModel, MODEL_POLL_MS);
  repeat(pollStreams, STREAMS_POLL_MS);
  repeat(pollHealth, HEALTH_POLL_MS);
  connect();
})();
