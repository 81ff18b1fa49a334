// actsort_nb labelling panel (anywidget ES module).
// One candidate at a time arrives in the `current` trait as binary buffers
// ({shape, dtype, data: DataView}); the field-of-view map arrives once in `fov`
// and its colours in `map_state`. Decisions go back through the `action` trait.

const COLORS = {
  cell: "#22c55e",
  not: "#f43f5e",
  unl: "rgba(226, 232, 240, 0.75)",
  self: "#38bdf8",
  neigh: "rgba(250, 204, 21, 0.9)",
};
const CROP_PX = 168; // displayed size of the footprint crop
const SNAP_PX = 84; // displayed size of one event snapshot
const SEG_HALF = 40; // frames either side of an event in the zoomed trace segments
const MAP_PX = 400; // longest side of the field-of-view map
const MAX_LAT = 1000;

const TYPED = {
  uint8: Uint8Array,
  int8: Int8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  float32: Float32Array,
};

/** Turn a {shape, dtype, data} payload into a typed array (copying only if misaligned). */
function typed(p) {
  if (!p || !p.data) return null;
  const T = TYPED[p.dtype];
  let buf, off, len;
  if (p.data instanceof DataView) {
    buf = p.data.buffer; off = p.data.byteOffset; len = p.data.byteLength;
  } else if (p.data instanceof ArrayBuffer) {
    buf = p.data; off = 0; len = p.data.byteLength;
  } else {
    return null;
  }
  if (off % T.BYTES_PER_ELEMENT !== 0) {
    buf = buf.slice(off, off + len); off = 0;
  }
  return new T(buf, off, len / T.BYTES_PER_ELEMENT);
}

function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.appendChild(c);
  return e;
}

/** Grey image (Float32Array or Uint8Array, w*h) -> ImageData with limits lo..hi. */
function greyImage(values, w, hgt, lo, hi) {
  const img = new ImageData(w, hgt);
  const d = img.data;
  const s = 255 / Math.max(hi - lo, 1e-12);
  for (let i = 0; i < w * hgt; i++) {
    let v = (values[i] - lo) * s;
    v = v < 0 ? 0 : v > 255 ? 255 : v;
    d[4 * i] = v; d[4 * i + 1] = v; d[4 * i + 2] = v; d[4 * i + 3] = 255;
  }
  return img;
}

/** Draw an ImageData scaled up without smoothing into ctx (dest rect). */
function blit(ctx, img, dx, dy, dw, dh) {
  const off = document.createElement("canvas");
  off.width = img.width; off.height = img.height;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, dx, dy, dw, dh);
}

/** Stroke the pixel-edge outline of mask(i) (a w*hgt grid) scaled by s. */
function outline(ctx, inside, w, hgt, s, color, width) {
  ctx.beginPath();
  for (let y = 0; y < hgt; y++) {
    for (let x = 0; x < w; x++) {
      const k = inside(y * w + x);
      if (!k) continue;
      if (y === 0 || inside((y - 1) * w + x) !== k) { ctx.moveTo(x * s, y * s); ctx.lineTo((x + 1) * s, y * s); }
      if (y === hgt - 1 || inside((y + 1) * w + x) !== k) { ctx.moveTo(x * s, (y + 1) * s); ctx.lineTo((x + 1) * s, (y + 1) * s); }
      if (x === 0 || inside(y * w + x - 1) !== k) { ctx.moveTo(x * s, y * s); ctx.lineTo(x * s, (y + 1) * s); }
      if (x === w - 1 || inside(y * w + x + 1) !== k) { ctx.moveTo((x + 1) * s, y * s); ctx.lineTo((x + 1) * s, (y + 1) * s); }
    }
  }
  ctx.strokeStyle = color; ctx.lineWidth = width; ctx.stroke();
}

function labelColor(label) {
  return label === 1 ? COLORS.cell : label === 0 ? COLORS.not : COLORS.unl;
}

// P(cell) ramp: blue (not a cell) -> light -> green (cell), 17 steps.
const P_RAMP = Array.from({ length: 17 }, (_, i) => {
  const t = i / 16;
  const a = [96, 165, 250], m = [241, 245, 249], b = [34, 197, 94];
  const [c0, c1, u] = t < 0.5 ? [a, m, t * 2] : [m, b, (t - 0.5) * 2];
  const c = c0.map((v, j) => Math.round(v + (c1[j] - v) * u));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
});

function fmtP(p) {
  return p === null || p === undefined || Number.isNaN(p) ? "–" : p.toFixed(2);
}

function render({ model, el }) {
  // ---------- DOM ----------
  const root = h("div", { class: "actsort-panel", tabindex: "0", "data-lm-suppress-shortcuts": "true" });
  const title = h("div", { class: "as-title" });
  const idBox = h("input", { class: "as-idbox", type: "text", placeholder: "go to id…", "aria-label": "candidate id", title: "type a candidate id and press Enter" });
  const goBtn = h("button", { class: "as-btn as-go", text: "Go", title: "show this candidate" });
  const header = h("div", { class: "as-header" }, [title, h("div", { class: "as-goto" }, [idBox, goBtn])]);

  const cropCanvas = h("canvas", { class: "as-crop", width: String(CROP_PX), height: String(CROP_PX) });
  const pBar = h("div", { class: "as-pbar-fill" });
  const pThr = h("div", { class: "as-pbar-thr" });
  const pText = h("div", { class: "as-ptext" });
  const decision = h("div", { class: "as-decision" });
  const humanLabel = h("div", { class: "as-human" });
  const countsEl = h("div", { class: "as-counts" });
  const mk = (cls, text, title) => h("button", { class: `as-btn ${cls}`, text, title });
  const btnCell = mk("as-cell", "✓ Cell", "cell (↑ or a)");
  const btnNot = mk("as-not", "✗ Not a cell", "not a cell (↓ or r)");
  const btnSkip = mk("as-skip", "Skip", "skip for now (s)");
  const btnUndo = mk("as-undo", "↶ Undo", "take back the last decision (z)");
  const btnPrev = mk("as-prev", "←", "previous in history (←)");
  const btnNext = mk("as-next", "→", "next in history (→)");
  const btnPlay = mk("as-play", "▶ Play", "play the event clips (Space)");
  const statusEl = h("div", { class: "as-status", role: "status" });
  const info = h("div", { class: "as-info" }, [
    h("div", { class: "as-pbar" }, [pBar, pThr]), pText, decision, humanLabel, countsEl,
    h("div", { class: "as-buttons" }, [btnCell, btnNot]),
    h("div", { class: "as-buttons as-buttons2" }, [btnSkip, btnUndo, btnPrev, btnNext, btnPlay]),
    statusEl,
  ]);
  const top = h("div", { class: "as-top" }, [h("div", { class: "as-cropbox" }, [cropCanvas, h("div", { class: "as-caption", text: "blue: this · yellow: neighbours" })]), info]);

  const snapCanvases = [], segCanvases = [], snapCaps = [];
  const snapRow = h("div", { class: "as-snaps" });
  const segRow = h("div", { class: "as-segs" });
  for (let e = 0; e < 5; e++) {
    const c = h("canvas", { class: "as-snap", width: String(SNAP_PX), height: String(SNAP_PX) });
    const cap = h("div", { class: "as-caption" });
    snapCanvases.push(c); snapCaps.push(cap);
    snapRow.appendChild(h("div", { class: "as-snapbox" }, [c, cap]));
    const s = h("canvas", { class: "as-seg", width: String(SNAP_PX), height: "44" });
    segCanvases.push(s);
    segRow.appendChild(s);
  }
  const traceCanvas = h("canvas", { class: "as-trace", width: String(5 * (SNAP_PX + 8) - 8), height: "84" });
  const left = h("div", { class: "as-left" }, [
    top,
    h("div", { class: "as-section", text: "Event snapshots" }), snapRow,
    h("div", { class: "as-section", text: "Trace (events marked) and zoom around each event" }), traceCanvas, segRow,
  ]);

  const colorSel = h("select", { class: "as-colorby", "aria-label": "colour map by" });
  for (const [v, t] of [["label", "colour: human label"], ["p_cell", "colour: P(cell)"]]) colorSel.appendChild(h("option", { value: v, text: t }));
  const imageSel = h("select", { class: "as-image", "aria-label": "summary image" });
  for (const [v, t] of [["max", "max image"], ["mean", "mean image"], ["corr", "correlation image"]]) imageSel.appendChild(h("option", { value: v, text: t }));
  const black = h("input", { class: "as-black", type: "range", min: "-50", max: "90", value: "0", title: "black point" });
  const white = h("input", { class: "as-white", type: "range", min: "10", max: "150", value: "100", title: "white point" });
  const alpha = h("input", { class: "as-alpha", type: "range", min: "0", max: "100", value: "85", title: "outline opacity" });
  const mapBase = h("canvas", { class: "as-map-base", width: String(MAP_PX), height: String(MAP_PX) });
  const mapCanvas = h("canvas", { class: "as-map", width: String(MAP_PX), height: String(MAP_PX) });
  const mapWrap = h("div", { class: "as-mapwrap" }, [mapBase, mapCanvas]);
  const legend = h("div", { class: "as-legend" });
  const hoverEl = h("div", { class: "as-hover" });
  const right = h("div", { class: "as-right" }, [
    h("div", { class: "as-mapctl" }, [colorSel, imageSel]),
    mapWrap, legend, hoverEl,
    h("div", { class: "as-sliders" }, [
      h("label", { text: "black" }), black, h("label", { text: "white" }), white, h("label", { text: "outlines" }), alpha,
    ]),
  ]);
  const help = h("div", { class: "as-help", text: "keys: ↑/a cell · ↓/r not a cell · s skip · z undo · ←/→ history · Space play · click the map to select · wheel zooms the map, drag pans, double-click resets" });
  root.append(header, h("div", { class: "as-body" }, [left, right]), help);
  el.appendChild(root);

  // ---------- state ----------
  let cur = null; // decoded current candidate
  let fov = null; // decoded map
  let mapCol = null; // {labels, p, hasP, threshold}
  let frame = 5; // shown clip frame
  let playing = null; // interval id
  let pending = null; // {seq, t0, kind, index}: sent, not yet answered
  const queued = []; // [{kind, extra, index, t0}]: asked for while a request was pending, in order
  const MAX_QUEUED = 16;
  let pendingTimer = null;
  let seq = (model.get("ack") || 0) + 1;
  let view = { x0: 0, y0: 0, scale: 1 }; // map view: fov pixel at canvas (0,0), canvas px per fov px
  const latencies = []; // ms from a decision key/click to the next candidate drawn (next frame)
  const paints = []; // ms spent decoding and drawing each candidate
  let mapQueued = false;

  // ---------- helpers ----------
  function contrast() {
    const b = Number(black.value) / 100, w = Number(white.value) / 100;
    return [b, Math.max(w, b + 0.01)];
  }
  function limits(lo, hi) {
    const [b, w] = contrast();
    return [lo + (hi - lo) * b, lo + (hi - lo) * w];
  }
  function imageIndex() {
    return { max: 0, mean: 1, corr: 2 }[imageSel.value] || 0;
  }

  function decode(c) {
    if (!c || c.index === undefined) return null;
    const [cy, cx] = c.footprint.shape;
    const snaps = typed(c.snapshots);
    return {
      raw: c, cy, cx,
      summary: typed(c.summary),
      footprint: typed(c.footprint),
      neighbors: typed(c.neighbors),
      snaps,
      nEvents: c.snapshots.shape[0], nFrames: c.snapshots.shape[1],
      trace: typed(c.trace),
      p: c.p_cell,
    };
  }

  // ---------- candidate drawing ----------
  function drawCrop() {
    const ctx = cropCanvas.getContext("2d");
    ctx.fillStyle = "#0f172a"; ctx.fillRect(0, 0, CROP_PX, CROP_PX);
    if (!cur) return;
    const { cy, cx } = cur;
    const k = imageIndex();
    const vals = cur.summary.subarray(k * cy * cx, (k + 1) * cy * cx);
    const [lo, hi] = limits(...cur.raw.summary_limits[k]);
    const s = CROP_PX / Math.max(cy, cx);
    blit(ctx, greyImage(vals, cx, cy, lo, hi), 0, 0, cx * s, cy * s);
    const a = Number(alpha.value) / 100;
    ctx.globalAlpha = a;
    const nb = cur.neighbors;
    const nbl = cur.raw.neighbor_labels || [];
    // neighbours: outline per neighbour id, coloured by their human label if any
    if (nb) {
      ctx.save(); ctx.setLineDash([3, 2]);
      outline(ctx, (i) => nb[i], cx, cy, s, COLORS.neigh, 1.2);
      ctx.restore();
      nbl.forEach((lab, j) => {
        if (lab < 0) return;
        outline(ctx, (i) => (nb[i] === j + 1 ? 1 : 0), cx, cy, s, labelColor(lab), 1.6);
      });
    }
    const fp = cur.footprint, lev = cur.raw.footprint_level;
    outline(ctx, (i) => (fp[i] >= lev ? 1 : 0), cx, cy, s, COLORS.self, 2);
    ctx.globalAlpha = 1;
  }

  function drawSnaps() {
    if (!cur) return;
    const { cy, cx, nEvents, nFrames } = cur;
    const [lo, hi] = limits(...cur.raw.snapshot_limits);
    const fp = cur.footprint, lev = cur.raw.footprint_level;
    const s = SNAP_PX / Math.max(cy, cx);
    const ev = cur.raw.event_frame;
    const rate = cur.raw.frame_rate;
    const a = Number(alpha.value) / 100;
    for (let e = 0; e < 5; e++) {
      const ctx = snapCanvases[e].getContext("2d");
      ctx.fillStyle = "#0f172a"; ctx.fillRect(0, 0, SNAP_PX, SNAP_PX);
      if (e >= nEvents || ev[e] < 0) { snapCaps[e].textContent = "no event"; continue; }
      const f = Math.min(frame, nFrames - 1);
      const off = ((e * nFrames) + f) * cy * cx;
      blit(ctx, greyImage(cur.snaps.subarray(off, off + cy * cx), cx, cy, lo, hi), 0, 0, cx * s, cy * s);
      ctx.globalAlpha = 0.55 * a;
      outline(ctx, (i) => (fp[i] >= lev ? 1 : 0), cx, cy, s, COLORS.self, 1);
      ctx.globalAlpha = 1;
      const t = ev[e] + f - Math.floor(nFrames / 2);
      snapCaps[e].textContent = rate ? `event ${e + 1} · ${(t / rate).toFixed(1)} s` : `event ${e + 1} · frame ${t}`;
    }
  }

  function tracePath(ctx, tr, i0, i1, W, H, lo, hi, color) {
    const n = i1 - i0;
    const sy = (H - 6) / Math.max(hi - lo, 1e-12);
    ctx.beginPath();
    if (n <= W * 2) {
      for (let i = i0; i < i1; i++) {
        const x = ((i - i0) / Math.max(n - 1, 1)) * (W - 1), y = H - 3 - (tr[i] - lo) * sy;
        i === i0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
      }
    } else { // min/max per pixel column
      for (let px = 0; px < W; px++) {
        const a = i0 + Math.floor((px * n) / W), b = Math.max(a + 1, i0 + Math.floor(((px + 1) * n) / W));
        let mn = Infinity, mx = -Infinity;
        for (let i = a; i < b; i++) { const v = tr[i]; if (v < mn) mn = v; if (v > mx) mx = v; }
        const ya = H - 3 - (mx - lo) * sy, yb = H - 3 - (mn - lo) * sy + 0.01;
        px === 0 ? ctx.moveTo(px + 0.5, ya) : ctx.lineTo(px + 0.5, ya);
        ctx.lineTo(px + 0.5, yb);
      }
    }
    ctx.strokeStyle = color; ctx.lineWidth = 1; ctx.stroke();
  }

  function drawTrace() {
    const ctx = traceCanvas.getContext("2d");
    const W = traceCanvas.width, H = traceCanvas.height;
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
    if (!cur) return;
    const tr = cur.trace, n = tr.length;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) { if (tr[i] < lo) lo = tr[i]; if (tr[i] > hi) hi = tr[i]; }
    const ev = cur.raw.event_frame;
    ctx.fillStyle = "rgba(244, 114, 182, 0.18)";
    ev.forEach((f, e) => {
      if (f < 0) return;
      const x0 = ((f - SEG_HALF) / n) * W, x1 = ((f + SEG_HALF) / n) * W;
      ctx.fillRect(x0, 0, Math.max(2, x1 - x0), H);
    });
    tracePath(ctx, tr, 0, n, W, H, lo, hi, "#334155");
    ctx.fillStyle = "#be185d"; ctx.font = "10px sans-serif";
    ev.forEach((f, e) => { if (f >= 0) ctx.fillText(String(e + 1), Math.min(W - 8, (f / n) * W + 2), 10); });
    const nFrames = cur.nFrames;
    segCanvases.forEach((c, e) => {
      const g = c.getContext("2d"), w = c.width, hh = c.height;
      g.fillStyle = "#ffffff"; g.fillRect(0, 0, w, hh);
      const f = ev[e];
      if (f === undefined || f < 0) return;
      const i0 = Math.max(0, f - SEG_HALF), i1 = Math.min(n, f + SEG_HALF + 1);
      let a = Infinity, b = -Infinity;
      for (let i = i0; i < i1; i++) { if (tr[i] < a) a = tr[i]; if (tr[i] > b) b = tr[i]; }
      // the clip's span, and the shown frame
      const X = (i) => ((i - i0) / Math.max(i1 - i0 - 1, 1)) * (w - 1);
      g.fillStyle = "rgba(56, 189, 248, 0.18)";
      g.fillRect(X(f - Math.floor(nFrames / 2)), 0, X(f + Math.floor(nFrames / 2)) - X(f - Math.floor(nFrames / 2)), hh);
      tracePath(g, tr, i0, i1, w, hh, a, b, "#0f172a");
      g.strokeStyle = "#be185d"; g.lineWidth = 1;
      const xf = X(f + Math.min(frame, nFrames - 1) - Math.floor(nFrames / 2));
      g.beginPath(); g.moveTo(xf, 0); g.lineTo(xf, hh); g.stroke();
    });
  }

  function drawInfo() {
    const c = cur ? cur.raw : null;
    const mv = model.get("model_view") || {};
    let p = c ? c.p_cell : null;
    let thr = c ? c.threshold : 0.5;
    if (c && mv.index === c.index) { p = mv.p_cell; thr = mv.threshold; }
    if (!c) {
      title.textContent = "No candidate to show";
      return;
    }
    title.innerHTML = "";
    title.append(h("span", { class: "as-id", text: `Candidate ${c.id}` }), h("span", { class: "as-sub", text: ` (#${c.index})` }));
    const hasP = p !== null && p !== undefined;
    pBar.style.width = hasP ? `${(100 * p).toFixed(1)}%` : "0%";
    pBar.style.background = hasP && p >= thr ? COLORS.cell : COLORS.not;
    pThr.style.left = `${(100 * thr).toFixed(1)}%`;
    pText.textContent = `P(cell) ${fmtP(p)}   (threshold ${thr.toFixed(2)})`;
    decision.textContent = hasP ? `model: ${p >= thr ? "cell" : "not a cell"}` : "model: not trained yet";
    decision.className = "as-decision " + (hasP ? (p >= thr ? "is-cell" : "is-not") : "");
    const lab = c.label;
    humanLabel.textContent = lab === 1 ? "your label: cell" : lab === 0 ? "your label: not a cell" : "your label: –";
    humanLabel.className = "as-human " + (lab === 1 ? "is-cell" : lab === 0 ? "is-not" : "");
    root.dataset.candidate = String(c.index);
    root.dataset.candidateId = String(c.id);
  }

  function drawCounts() {
    const k = model.get("counts") || {};
    if (k.n === undefined) { countsEl.textContent = ""; return; }
    const where = k.history_pos === null || k.history_pos === undefined ? "" : ` · history ${k.history_pos + 1}/${k.history_len}`;
    countsEl.textContent = `labelled ${k.labelled} of ${k.n} · cells ${k.cells} · not ${k.not_cells} · model: ${k.model_cells ?? "–"} cells${where}`;
  }

  function drawCandidate() {
    drawInfo(); drawCrop(); drawSnaps(); drawTrace();
  }

  // ---------- map ----------
  function mapSize() {
    if (!fov) return [MAP_PX, MAP_PX];
    const [hh, ww] = fov.fov_shape;
    const s = MAP_PX / Math.max(hh, ww);
    return [Math.round(ww * s), Math.round(hh * s)];
  }
  function resetView() {
    if (!fov) return;
    const [W] = mapSize();
    view = { x0: 0, y0: 0, scale: W / fov.fov_shape[1] };
  }
  function decodeFov(f) {
    if (!f || !f.centers) return null;
    return { ...f, imgs: typed(f.images), cen: typed(f.centers), rad: typed(f.radii), idv: f.ids ? typed(f.ids) : null };
  }
  function background(k) {
    // the summary image at its sent resolution, with the current contrast, cached per contrast
    const key = `${k}:${black.value}:${white.value}`;
    if (fov.bgKey === key) return fov.bgCanvas;
    const [hh, ww] = fov.image_shape;
    const vals = fov.imgs.subarray(k * hh * ww, (k + 1) * hh * ww);
    const [lo, hi] = limits(0, 255);
    const c = document.createElement("canvas");
    c.width = ww; c.height = hh;
    c.getContext("2d").putImageData(greyImage(vals, ww, hh, lo, hi), 0, 0);
    fov.bgKey = key; fov.bgCanvas = c;
    return c;
  }
  function drawMarker() {
    // the shown candidate, on the overlay canvas: cheap, redrawn with every candidate
    const ctx = mapCanvas.getContext("2d");
    ctx.clearRect(0, 0, mapCanvas.width, mapCanvas.height);
    if (!cur || !fov) return;
    let { x0, y0, scale } = view;
    let sx = (cur.raw.center[1] - x0 + 0.5) * scale, sy = (cur.raw.center[0] - y0 + 0.5) * scale;
    if (sx < 0 || sy < 0 || sx > mapCanvas.width || sy > mapCanvas.height) {
      // zoomed in and the shown candidate is off the view: follow it
      view.x0 = cur.raw.center[1] - mapCanvas.width / (2 * scale);
      view.y0 = cur.raw.center[0] - mapCanvas.height / (2 * scale);
      ({ x0, y0 } = view);
      sx = (cur.raw.center[1] - x0 + 0.5) * scale; sy = (cur.raw.center[0] - y0 + 0.5) * scale;
      queueMap();
    }
    const r = Math.max(8, 6 * scale);
    ctx.lineWidth = 4; ctx.strokeStyle = "rgba(15, 23, 42, 0.7)";
    ctx.beginPath(); ctx.arc(sx, sy, r, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = COLORS.self; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(sx, sy, r, 0, 2 * Math.PI); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(sx - r - 7, sy); ctx.lineTo(sx - r + 2, sy); ctx.moveTo(sx + r - 2, sy); ctx.lineTo(sx + r + 7, sy);
    ctx.moveTo(sx, sy - r - 7); ctx.lineTo(sx, sy - r + 2); ctx.moveTo(sx, sy + r - 2); ctx.lineTo(sx, sy + r + 7); ctx.stroke();
  }
  function drawMap() {
    // the outlines of every candidate: redrawn only when colours, view or contrast change
    mapQueued = false;
    const ctx = mapBase.getContext("2d");
    const [W, H] = mapSize();
    for (const c of [mapBase, mapCanvas]) { if (c.width !== W) c.width = W; if (c.height !== H) c.height = H; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0f172a"; ctx.fillRect(0, 0, W, H);
    if (!fov) return;
    const t0 = performance.now();
    const f = fov.image_factor;
    const { x0, y0, scale } = view;
    ctx.imageSmoothingEnabled = scale * f < 2;
    ctx.drawImage(background(imageIndex()), -x0 * scale, -y0 * scale, fov.image_shape[1] * f * scale, fov.image_shape[0] * f * scale);
    const n = fov.n, R = fov.n_rays, cen = fov.cen, rad = fov.rad;
    const byP = colorSel.value === "p_cell" && mapCol && mapCol.hasP;
    const nBins = byP ? P_RAMP.length : 3;
    const paths = Array.from({ length: nBins }, () => new Path2D());
    const cosT = new Float32Array(R), sinT = new Float32Array(R);
    for (let k = 0; k < R; k++) { const a = ((k + 0.5) / R) * 2 * Math.PI; cosT[k] = Math.cos(a); sinT[k] = Math.sin(a); }
    const xMax = W / scale + x0 + 20, yMax = H / scale + y0 + 20;
    const labels = mapCol ? mapCol.labels : null, ps = mapCol ? mapCol.p : null;
    for (let i = 0; i < n; i++) {
      const cy = cen[2 * i], cx = cen[2 * i + 1];
      if (cx < x0 - 20 || cy < y0 - 20 || cx > xMax || cy > yMax) continue;
      let b;
      if (byP) b = Math.min(nBins - 1, Math.floor((ps[i] / 255) * nBins));
      else { const l = labels ? labels[i] : -1; b = l === 1 ? 0 : l === 0 ? 1 : 2; }
      const p = paths[b];
      const sx = (cx - x0 + 0.5) * scale, sy = (cy - y0 + 0.5) * scale;
      if (scale < 0.6) { p.rect(sx - 1, sy - 1, 2, 2); continue; }
      for (let k = 0; k < R; k++) {
        const r = (rad[i * R + k] / 4) * scale;
        const px = sx + r * cosT[k], py = sy + r * sinT[k];
        k === 0 ? p.moveTo(px, py) : p.lineTo(px, py);
      }
      p.closePath();
    }
    ctx.globalAlpha = Number(alpha.value) / 100;
    ctx.lineWidth = scale > 3 ? 1.5 : 1;
    const cols = byP ? P_RAMP : [COLORS.cell, COLORS.not, COLORS.unl];
    // draw unlabelled first so labelled outlines stay on top
    const order = byP ? paths.map((_, i) => i) : [2, 1, 0];
    for (const b of order) { ctx.strokeStyle = cols[b]; ctx.stroke(paths[b]); }
    ctx.globalAlpha = 1;
    root.dataset.mapMs = (performance.now() - t0).toFixed(1);
    drawMarker();
    legend.innerHTML = "";
    if (byP) {
      legend.append(h("span", { class: "as-swatch", style: `background: linear-gradient(90deg, ${P_RAMP[0]}, ${P_RAMP[8]}, ${P_RAMP[16]})` }), h("span", { text: ` P(cell) 0 → 1 · threshold ${mapCol.threshold.toFixed(2)}` }));
    } else {
      for (const [c, t] of [[COLORS.cell, "cell"], [COLORS.not, "not a cell"], [COLORS.unl, "unlabelled"], [COLORS.self, "shown"]]) {
        legend.append(h("span", { class: "as-swatch", style: `background:${c}` }), h("span", { text: ` ${t}  ` }));
      }
    }
  }
  function queueMap() {
    if (mapQueued) return;
    mapQueued = true;
    requestAnimationFrame(drawMap);
  }
  function mapPoint(ev) {
    const r = mapCanvas.getBoundingClientRect();
    const sx = ((ev.clientX - r.left) * mapCanvas.width) / r.width, sy = ((ev.clientY - r.top) * mapCanvas.height) / r.height;
    return [sx, sy, sx / view.scale + view.x0, sy / view.scale + view.y0];
  }
  function nearest(fx, fy, maxDist) {
    let best = -1, bd = maxDist * maxDist;
    const cen = fov.cen;
    for (let i = 0; i < fov.n; i++) {
      const dy = cen[2 * i] + 0.5 - fy, dx = cen[2 * i + 1] + 0.5 - fx, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }

  // ---------- actions ----------
  function unlock() {
    pending = null;
    root.classList.remove("is-busy");
    clearTimeout(pendingTimer);
    if (queued.length) { // requests made while the kernel was busy: send the oldest now
      const q = queued.shift();
      dispatch(q.kind, q.extra, q.index, q.t0);
    }
  }
  function dispatch(kind, extra, index, t0) {
    seq = Math.max(seq, (model.get("ack") || 0) + 1); // another view of this model may have sent some
    const s = seq++;
    pending = { seq: s, kind, index, t0 };
    root.classList.add("is-busy");
    clearTimeout(pendingTimer);
    pendingTimer = setTimeout(unlock, 15000);
    model.set("action", { kind, seq: s, index, ...extra });
    model.save_changes();
  }
  function send(kind, extra = {}) {
    const index = cur ? cur.raw.index : -1;
    const t0 = performance.now();
    if (pending) {
      // One request at a time. A second decision on a candidate a waiting one is about
      // (a double press) is dropped; anything else waits its turn, in order.
      const decides = (r) => r.kind === "label" || r.kind === "skip";
      const twice = decides({ kind }) && [pending, ...queued].some((r) => decides(r) && r.index === index);
      if (twice || queued.length >= MAX_QUEUED) {
        root.classList.add("is-flash"); setTimeout(() => root.classList.remove("is-flash"), 150);
        return false;
      }
      queued.push({ kind, extra, index, t0 });
      return true;
    }
    dispatch(kind, extra, index, t0);
    return true;
  }
  const label = (v) => cur && send("label", { label: v });
  const doSkip = () => cur && send("skip");
  const doUndo = () => send("undo");
  const doPrev = () => send("prev");
  const doNext = () => send("next");
  function goId() {
    const v = idBox.value.trim();
    if (v) send("goto", { id: v });
    root.focus({ preventScroll: true }); // the keys label again
  }

  function togglePlay() {
    if (playing) { clearInterval(playing); playing = null; btnPlay.textContent = "▶ Play"; frame = cur ? Math.floor(cur.nFrames / 2) : 5; drawSnaps(); drawTrace(); return; }
    if (!cur) return;
    btnPlay.textContent = "■ Stop";
    frame = 0;
    playing = setInterval(() => {
      frame = (frame + 1) % cur.nFrames;
      drawSnaps(); drawTrace();
    }, 110);
  }

  function onKey(ev) {
    if (ev.target === idBox) {
      if (ev.key === "Enter") { ev.preventDefault(); goId(); }
      ev.stopPropagation();
      return;
    }
    const control = ev.target instanceof HTMLSelectElement || ev.target instanceof HTMLInputElement;
    if (control) ev.stopPropagation(); // never a notebook shortcut from inside the panel (r: raw cell)
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (control && !["a", "r", "z", "s"].includes(k)) return; // arrows and space work the control itself
    let done = true;
    if (k === "ArrowUp" || k === "a") label(1);
    else if (k === "ArrowDown" || k === "r") label(0);
    else if (k === "ArrowLeft") doPrev();
    else if (k === "ArrowRight") doNext();
    else if (k === " " || k === "Spacebar") togglePlay();
    else if (k === "z") doUndo();
    else if (k === "s") doSkip();
    else done = false;
    if (done) { ev.preventDefault(); ev.stopPropagation(); }
  }

  // map mouse: click selects, drag pans, wheel zooms
  let drag = null;
  function onDown(ev) { const [sx, sy] = mapPoint(ev); drag = { sx, sy, x0: view.x0, y0: view.y0, moved: false }; }
  function onHover(ev) {
    if (drag || !fov) return;
    const [, , fx, fy] = mapPoint(ev);
    const i = nearest(fx, fy, Math.max(3, 10 / view.scale));
    if (i < 0) { hoverEl.textContent = ""; return; }
    const lab = mapCol ? mapCol.labels[i] : -1;
    const p = mapCol && mapCol.hasP ? ` · P(cell) ${(mapCol.p[i] / 255).toFixed(2)}` : "";
    const name = fov.idv ? `candidate ${fov.idv[i]}` : `candidate #${i}`;
    hoverEl.textContent = `${name}${lab === 1 ? " · cell" : lab === 0 ? " · not a cell" : ""}${p} — click to show`;
  }
  function onMove(ev) {
    if (!drag) return;
    const [sx, sy] = mapPoint(ev);
    if (Math.abs(sx - drag.sx) + Math.abs(sy - drag.sy) > 4) drag.moved = true;
    if (drag.moved) { view.x0 = drag.x0 - (sx - drag.sx) / view.scale; view.y0 = drag.y0 - (sy - drag.sy) / view.scale; queueMap(); }
  }
  function onUp(ev) {
    if (!drag) return;
    const moved = drag.moved; drag = null;
    if (moved || !fov) return;
    const [, , fx, fy] = mapPoint(ev);
    const i = nearest(fx, fy, Math.max(3, 10 / view.scale));
    if (i >= 0) send("goto", { index: i });
  }
  function onWheel(ev) {
    if (!fov) return;
    ev.preventDefault();
    const [sx, sy, fx, fy] = mapPoint(ev);
    const base = mapSize()[0] / fov.fov_shape[1];
    const s = Math.min(base * 64, Math.max(base, view.scale * Math.exp(-ev.deltaY * 0.0015)));
    view = { scale: s, x0: fx - sx / s, y0: fy - sy / s };
    queueMap();
  }
  function onDbl() { resetView(); queueMap(); }

  // ---------- model -> view ----------
  function onCurrent() {
    const tp = performance.now();
    cur = decode(model.get("current"));
    if (playing) { clearInterval(playing); playing = null; btnPlay.textContent = "▶ Play"; }
    frame = cur ? Math.floor(cur.nFrames / 2) : 5;
    drawCandidate();
    drawCounts();
    paints.push(Math.round((performance.now() - tp) * 10) / 10);
    if (paints.length > MAX_LAT) paints.shift();
    root.dataset.paintMs = JSON.stringify(paints);
    const p = pending;
    if (p && (p.kind === "label" || p.kind === "skip" || p.kind === "goto" || p.kind === "undo" || p.kind === "prev" || p.kind === "next")) {
      // time from the key press to the new candidate drawn, measured at the next frame
      requestAnimationFrame(() => {
        const dt = performance.now() - p.t0;
        latencies.push(Math.round(dt * 10) / 10);
        if (latencies.length > MAX_LAT) latencies.shift();
        root.dataset.latencies = JSON.stringify(latencies);
        root.dataset.nPainted = String(latencies.length);
      });
    }
    drawMarker();
  }
  function onAck() {
    if (pending && model.get("ack") >= pending.seq) unlock();
  }
  function onFov() {
    fov = decodeFov(model.get("fov")); resetView(); queueMap();
    if (fov) root.dataset.fov = JSON.stringify(fov.fov_shape);
  }
  function onMapState() {
    const s = model.get("map_state");
    mapCol = s && s.labels ? { labels: typed(s.labels), p: typed(s.p), hasP: s.has_p, threshold: s.threshold } : null;
    queueMap();
  }
  function onStatus() {
    statusEl.textContent = model.get("status") || "";
  }
  function onModelView() { drawInfo(); }
  function onColorBy() { colorSel.value = model.get("color_by"); queueMap(); }
  function onImage() { imageSel.value = model.get("image"); drawCrop(); queueMap(); }
  function onContrast() {
    const [b, w] = model.get("contrast") || [0, 1];
    black.value = String(Math.round(b * 100)); white.value = String(Math.round(w * 100));
    drawCrop(); drawSnaps(); queueMap();
  }

  // ---------- view -> model ----------
  function onColorSel() { model.set("color_by", colorSel.value); model.save_changes(); queueMap(); root.focus({ preventScroll: true }); }
  function onImageSel() { model.set("image", imageSel.value); model.save_changes(); drawCrop(); queueMap(); root.focus({ preventScroll: true }); }
  function onSlide() { drawCrop(); drawSnaps(); queueMap(); }
  function onSlideDone() { model.set("contrast", contrast()); model.save_changes(); root.focus({ preventScroll: true }); }
  function focusRoot(ev) {
    // keep the keyboard on the panel root: a focused button would turn Space/Enter into its own click
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (ev.target instanceof HTMLButtonElement) ev.preventDefault();
    root.focus({ preventScroll: true });
  }

  const listeners = [
    [root, "keydown", onKey], [root, "mousedown", focusRoot],
    [btnCell, "click", () => label(1)], [btnNot, "click", () => label(0)], [btnSkip, "click", doSkip],
    [btnUndo, "click", doUndo], [btnPrev, "click", doPrev], [btnNext, "click", doNext], [btnPlay, "click", togglePlay],
    [goBtn, "click", goId],
    [mapCanvas, "mousedown", onDown], [window, "mousemove", onMove], [window, "mouseup", onUp],
    [mapCanvas, "wheel", onWheel], [mapCanvas, "dblclick", onDbl], [mapCanvas, "mousemove", onHover],
    [mapCanvas, "mouseleave", () => { hoverEl.textContent = ""; }],
    [colorSel, "change", onColorSel], [imageSel, "change", onImageSel],
    [black, "input", onSlide], [white, "input", onSlide], [alpha, "input", onSlide],
    [black, "change", onSlideDone], [white, "change", onSlideDone], [alpha, "change", () => root.focus({ preventScroll: true })],
  ];
  for (const [t, e, f] of listeners) t.addEventListener(e, f, e === "wheel" ? { passive: false } : undefined);
  const traitHandlers = [
    ["change:current", onCurrent], ["change:ack", onAck], ["change:fov", onFov], ["change:map_state", onMapState],
    ["change:status", onStatus], ["change:model_view", onModelView], ["change:counts", drawCounts],
    ["change:color_by", onColorBy], ["change:image", onImage], ["change:contrast", onContrast],
  ];
  for (const [e, f] of traitHandlers) model.on(e, f);

  // initial state
  colorSel.value = model.get("color_by");
  imageSel.value = model.get("image");
  { const [b, w] = model.get("contrast") || [0, 1]; black.value = String(Math.round(b * 100)); white.value = String(Math.round(w * 100)); }
  onFov();
  onMapState();
  cur = decode(model.get("current"));
  drawCandidate(); drawCounts(); onStatus();
  root.dataset.ready = "1";

  return () => {
    for (const [t, e, f] of listeners) t.removeEventListener(e, f);
    for (const [e, f] of traitHandlers) model.off(e, f);
    if (playing) clearInterval(playing);
    clearTimeout(pendingTimer);
  };
}

export default { render };
