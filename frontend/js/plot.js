// Hand-written SVG plots (no chart library, nothing fetched at run time): a line chart with
// points and a histogram with a highlighted subset. Both return an <svg> that scales to its box.
// Every mark carries a class and data-* values so tests (and people) can read the numbers back.

const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2457d6", "#d9822b", "#1e8a4c", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d"];
const M = { top: 26, right: 12, bottom: 40, left: 58 }; // room for tick labels and axis titles

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  el.append(...children.filter((c) => c != null));
  return el;
}

function text(x, y, content, attrs = {}) {
  const el = s("text", { x, y, ...attrs });
  el.textContent = content;
  return el;
}

// 0.5, 1, 1.25, 0.000123: at most 3 significant digits, no trailing zeros.
export function shortNumber(v) {
  return String(Number(v.toPrecision(3)));
}

// Round tick values (1, 2, 5 × 10^k) covering [lo, hi], about `count` of them.
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((st) => st >= raw) ?? 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toFixed(12)));
  }
  return ticks;
}

function frame({ width, height, title }) {
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "plot",
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(s("title", {}, title));
  return svg;
}

function axes(svg, { width, height, xTicks, yTicks, x, y, xFormat, yFormat, xLabel, yLabel }) {
  const g = s("g", { class: "axes" });
  for (const t of yTicks) {
    g.append(
      s("line", { x1: M.left, x2: width - M.right, y1: y(t), y2: y(t), class: "grid" }),
      text(M.left - 6, y(t) + 4, yFormat(t), { "text-anchor": "end", class: "tick" }),
    );
  }
  for (const t of xTicks) {
    g.append(
      s("line", {
        x1: x(t),
        x2: x(t),
        y1: height - M.bottom,
        y2: height - M.bottom + 4,
        class: "axis",
      }),
      text(x(t), height - M.bottom + 16, xFormat(t), { "text-anchor": "middle", class: "tick" }),
    );
  }
  g.append(
    s("line", {
      x1: M.left,
      x2: width - M.right,
      y1: height - M.bottom,
      y2: height - M.bottom,
      class: "axis",
    }),
    text((M.left + width - M.right) / 2, height - 6, xLabel, {
      "text-anchor": "middle",
      class: "axis-title",
    }),
    text(12, (M.top + height - M.bottom) / 2, yLabel, {
      "text-anchor": "middle",
      class: "axis-title",
      transform: `rotate(-90 12 ${(M.top + height - M.bottom) / 2})`,
    }),
  );
  svg.append(g);
}

function empty(svg, width, height, message) {
  svg.append(text(width / 2, height / 2, message, { "text-anchor": "middle", class: "empty" }));
  svg.dataset.empty = "true";
  return svg;
}

const scale = (d0, d1, r0, r1) => (v) =>
  d1 === d0 ? (r0 + r1) / 2 : r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);

/**
 * series: [{name, points: [{x, y, title?}]}]; yDomain: fixed [lo, hi] (e.g. [0, 1]) or null to
 * fit the data. Points are drawn in x order; a series with one point is a lone dot.
 */
export function lineChart({
  series,
  title,
  xLabel,
  yLabel,
  yDomain = null,
  xFormat = (v) => String(v),
  yFormat = (v) => String(v),
  integerX = false,
  width = 440,
  height = 260,
}) {
  const svg = frame({ width, height, title });
  const all = series.flatMap((se) => se.points);
  if (!all.length) return empty(svg, width, height, "No data yet");
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const [y0, y1] = yDomain ?? [Math.min(...ys), Math.max(...ys)];
  // Counts (labels) get whole-number ticks only: "19.5 labels" means nothing.
  const xTicks = niceTicks(x0, x1, 6).filter((t) => !integerX || Number.isInteger(t));
  const yTicks = niceTicks(y0, y1, 5);
  const x = scale(x0, x1, M.left + 8, width - M.right - 8);
  const y = scale(Math.min(y0, ...yTicks), Math.max(y1, ...yTicks), height - M.bottom, M.top);
  axes(svg, { width, height, xTicks, yTicks, x, y, xFormat, yFormat, xLabel, yLabel });

  series.forEach((se, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = [...se.points].sort((a, b) => a.x - b.x);
    const g = s("g", { class: "series", "data-series": se.name });
    if (pts.length > 1) {
      const d = pts
        .map((p, j) => `${j ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`)
        .join("");
      g.append(s("path", { d, class: "line", stroke: color }));
    }
    for (const p of pts) {
      g.append(
        s(
          "circle",
          {
            cx: x(p.x),
            cy: y(p.y),
            r: 4,
            fill: color,
            class: "point",
            "data-x": p.x,
            "data-y": p.y,
          },
          s("title", {}, p.title ?? `${xFormat(p.x)}: ${yFormat(p.y)}`),
        ),
      );
    }
    svg.append(g);
  });
  if (series.length > 1)
    legend(
      svg,
      width,
      series.map((se, i) => [se.name, PALETTE[i % PALETTE.length]]),
    );
  return svg;
}

function legend(svg, width, entries) {
  const g = s("g", { class: "legend" });
  let x = width - M.right;
  for (const [name, color] of [...entries].reverse()) {
    // Above the plot area, right-aligned; text width estimated (no layout pass in a detached SVG).
    const label = text(x, 12, name, { "text-anchor": "end", class: "tick" });
    const w = 6.5 * name.length;
    g.append(label, s("rect", { x: x - w - 14, y: 3, width: 10, height: 10, fill: color, rx: 2 }));
    x -= w + 28;
  }
  svg.append(g);
}

/**
 * A histogram of `counts` over `edges` (len = counts + 1); `marked` values (e.g. the scores of
 * the items a cycle selected) are counted per bin and drawn over the bars in a second colour,
 * with a tick for each below the axis.
 */
export function histogram({
  edges,
  counts,
  marked = [],
  title,
  xLabel,
  yLabel = "items",
  markedLabel = "selected",
  xFormat = shortNumber,
  width = 440,
  height = 260,
}) {
  const svg = frame({ width, height, title });
  if (!counts?.length) return empty(svg, width, height, "No scores yet");
  let [lo, hi] = [edges[0], edges[edges.length - 1]];
  if (!(hi > lo)) [lo, hi] = [lo - 0.5, hi + 0.5];
  const top = Math.max(...counts, 1);
  const x = scale(lo, hi, M.left, width - M.right);
  const yTicks = niceTicks(0, top, 4);
  const y = scale(0, Math.max(top, ...yTicks), height - M.bottom, M.top);
  axes(svg, {
    width,
    height,
    xTicks: niceTicks(lo, hi, 6),
    yTicks,
    x,
    y,
    xFormat,
    yFormat: String,
    xLabel,
    yLabel,
  });

  const bin = (v) => {
    for (let i = 0; i < counts.length; i += 1) if (v <= edges[i + 1]) return i;
    return counts.length - 1;
  };
  const markedCounts = new Array(counts.length).fill(0);
  for (const v of marked) if (Number.isFinite(v)) markedCounts[bin(v)] += 1;

  const bars = s("g", { class: "bars" });
  counts.forEach((c, i) => {
    const x0 = x(edges[i]) + 0.5;
    const w = Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1);
    const tip = `${xFormat(edges[i])} – ${xFormat(edges[i + 1])}: ${c} items`;
    bars.append(
      s(
        "rect",
        { x: x0, y: y(c), width: w, height: y(0) - y(c), class: "hist-bar", "data-count": c },
        s("title", {}, markedCounts[i] ? `${tip}, ${markedCounts[i]} ${markedLabel}` : tip),
      ),
    );
    if (markedCounts[i]) {
      const m = Math.min(markedCounts[i], c || markedCounts[i]);
      bars.append(
        s("rect", {
          x: x0,
          y: y(m),
          width: w,
          height: y(0) - y(m),
          class: "hist-marked",
          "data-count": m,
        }),
      );
    }
  });
  svg.append(bars);
  const rug = s("g", { class: "rug" });
  const base = height - M.bottom;
  for (const v of marked) {
    if (Number.isFinite(v))
      rug.append(s("line", { x1: x(v), x2: x(v), y1: base - 6, y2: base, class: "hist-mark" }));
  }
  svg.append(rug);
  legend(svg, width, [
    ["pool", "#9db4ea"],
    [markedLabel, "#d9822b"],
  ]);
  return svg;
}
