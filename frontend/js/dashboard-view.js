// The dashboard's cards, drawn from API data. Pure functions: data in, elements out; the
// controller (dashboard.js) fetches, polls and decides what to redraw.
import { fmtPercent, fmtSeconds, fmtTime, h, progressBar } from "./dom.js";
import { histogram, lineChart } from "./plot.js";

export const RUNNING = new Set(["created", "training", "scoring"]);
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

const row = (label, ...value) =>
  h("div", { class: "kv" }, h("dt", {}, label), h("dd", {}, ...value));

export function settingsCard(p) {
  const spec = p.model_spec ?? {};
  return [
    h("h2", {}, "Project"),
    h(
      "div",
      { class: "chips", "aria-label": "Classes" },
      p.classes.map((c) => h("span", { class: "chip" }, c)),
    ),
    h(
      "dl",
      {},
      row("Kind", p.kind === "clean" ? "label cleaning" : "active learning"),
      row(
        "Model",
        `${spec.name ?? "–"} ${spec.input_shape ? `(${spec.input_shape.join("×")})` : ""}`,
      ),
      row("Model input", h("span", { id: "model-input" }, modelInput(spec))),
      row("Strategy", h("code", {}, p.strategy)),
      row("Labels derived by", h("code", { id: "aggregation" }, p.aggregation ?? "majority")),
      p.kind === "clean"
        ? row("Scored by", p.crossfit_folds >= 2 ? `${p.crossfit_folds} held-out folds` : "in-sample")
        : null,
      p.honeypot_rate ? row("Honeypots", fmtPercent(p.honeypot_rate, 0)) : null,
      row("Batch size", String(p.batch_size)),
      row(
        "Labels per item",
        p.confidence_target
          ? `up to ${p.labels_per_item}, until ${fmtPercent(p.confidence_target, 1)} sure`
          : String(p.labels_per_item),
      ),
      row(
        "Label budget",
        p.label_budget == null
          ? `${p.labels_spent} spent, no limit`
          : `${p.labels_spent} / ${p.label_budget}`,
      ),
      p.label_budget == null ? null : progressBar(p.labels_spent, p.label_budget, "Label budget"),
      p.kind === "clean"
        ? row("Relabel budget", p.relabel_budget == null ? "none" : String(p.relabel_budget))
        : null,
      p.kind === "clean"
        ? row("Fine-tune every", p.finetune_every == null ? "–" : `${p.finetune_every} labels`)
        : null,
      row("Auto-advance", p.auto_advance ? "on" : "off"),
      row("Seed", String(p.seed)),
    ),
  ];
}

function phaseTimings(c) {
  const t = c.timings ?? {};
  const parts = [
    ["train", t.train_s],
    ["evaluate", t.evaluate_s],
    ["score", t.score_s],
  ].filter(([, v]) => v != null);
  if (RUNNING.has(c.state) && c.started_at) {
    parts.push([`${c.state}, running for`, (Date.now() - Date.parse(c.started_at)) / 1000]);
  }
  return parts.length ? parts.map(([k, v]) => `${k} ${fmtSeconds(v)}`).join(" · ") : "–";
}

export function cycleCard(cycle, progress) {
  if (!cycle) return [h("h2", {}, "Current cycle"), h("p", { class: "muted" }, "No cycle yet.")];
  const m = cycle.metrics ?? {};
  const batch = progress?.cycle?.id === cycle.id ? progress.cycle : null;
  return [
    h("h2", {}, `Cycle ${cycle.number} `, stateBadge(cycle.state)),
    h(
      "dl",
      {},
      row(
        "Strategy",
        h("code", {}, m.strategy_used ?? cycle.strategy),
        m.cold_start ? " (cold start: random)" : "",
      ),
      row("Phase timings", phaseTimings(cycle)),
      row("Trained on", m.labels == null ? "–" : `${m.labels} labels, ${m.labelled_items} items`),
      row(
        "Test accuracy",
        fmtPercent(m.test?.accuracy),
        m.test ? ` (n = ${m.test.n}, ECE ${m.test.ece?.toFixed(3)})` : "",
      ),
      row("Started", fmtTime(cycle.started_at)),
      cycle.finished_at ? row("Finished", fmtTime(cycle.finished_at)) : null,
      batch ? row("Batch", `${batch.done} / ${batch.queued} items done`) : null,
      batch ? progressBar(batch.done, batch.queued, "Batch progress") : null,
    ),
    cycle.error ? h("pre", { class: "error-box" }, cycle.error) : null,
  ];
}

export function progressCard(pr) {
  if (!pr) return [h("h2", {}, "Live progress"), h("p", { class: "muted" }, "Loading…")];
  const stat = (label, value, id) =>
    h(
      "div",
      { class: "tile" },
      h("div", { class: "tile-value", id }, value),
      h("div", { class: "tile-label" }, label),
    );
  return [
    h("h2", {}, "Live progress"),
    h(
      "div",
      { class: "tiles" },
      stat(
        "labels spent",
        pr.label_budget == null
          ? String(pr.labels_spent)
          : `${pr.labels_spent} / ${pr.label_budget}`,
        "live-labels",
      ),
      stat("items open in batch", String(pr.queue_depth)),
      stat("label slots open", String(pr.slots_open)),
      stat("leases out", String(pr.leases_open)),
      stat("labels / min (10 min)", pr.rate_per_minute.toFixed(1)),
      stat("batch ETA", pr.eta_seconds == null ? "–" : fmtSeconds(pr.eta_seconds)),
      stat("tied items", String(pr.tied_items)),
    ),
    pr.cleaning
      ? h(
          "div",
          { class: "tiles" },
          stat("items cleaned", String(pr.cleaning.items_cleaned)),
          stat("items relabelled", String(pr.cleaning.items_relabelled)),
          stat("majority changed", String(pr.cleaning.majority_changed)),
          stat(
            "relabel budget",
            pr.cleaning.relabel_budget == null ? "–" : String(pr.cleaning.relabel_budget),
          ),
        )
      : null,
  ];
}

// Test accuracy against the labels each cycle trained on, one line per strategy actually used.
export function accuracyPlot(cycles) {
  const byStrategy = new Map();
  for (const c of cycles) {
    const acc = c.metrics?.test?.accuracy;
    if (acc == null || c.metrics.labels == null) continue;
    const name = c.metrics.strategy_used ?? c.strategy;
    if (!byStrategy.has(name)) byStrategy.set(name, []);
    byStrategy.get(name).push({
      x: c.metrics.labels,
      y: acc,
      title: `cycle ${c.number} (${name}): ${c.metrics.labels} labels, ${fmtPercent(acc)}`,
    });
  }
  return lineChart({
    series: [...byStrategy].map(([name, points]) => ({ name, points })),
    title: "Test accuracy vs labels collected",
    xLabel: "labels collected",
    yLabel: "test accuracy",
    yDomain: [0, 1],
    yFormat: (v) => `${Math.round(v * 100)}%`,
    integerX: true,
  });
}

// Cleaning: how much of the pool is cleaned against the labels spent on it. Prefers what the
// worker may record (metrics.majority_settled_fraction, metrics.labels_spent); until then the
// share is items_cleaned / labelled_items and the labels are those added since cycle 1.
export function cleaningPlot(cycles) {
  const ordered = [...cycles].sort((a, b) => a.number - b.number);
  const firstLabels = ordered.find((c) => c.metrics?.labels != null)?.metrics.labels ?? 0;
  const settled = ordered.some((c) => c.metrics?.majority_settled_fraction != null);
  const points = [];
  for (const c of ordered) {
    const m = c.metrics ?? {};
    const y = settled
      ? m.majority_settled_fraction
      : m.items_cleaned != null && m.labelled_items
        ? m.items_cleaned / m.labelled_items
        : null;
    const x = m.labels_spent ?? (m.labels == null ? null : m.labels - firstLabels);
    if (y == null || x == null) continue;
    points.push({ x, y, title: `cycle ${c.number}: ${x} labels spent, ${fmtPercent(y)}` });
  }
  const what = settled ? "items with a settled majority" : "items cleaned";
  // Cleaning moves a few percent of a pool: fit the y axis to the data, not to 0-100 %.
  const top = Math.min(1, Math.max(0.1, ...points.map((p) => p.y * 1.25)));
  return lineChart({
    series: [{ name: what, points }],
    title: `Share of ${what} vs labels spent`,
    xLabel:
      settled || ordered.some((c) => c.metrics?.labels_spent != null)
        ? "labels spent"
        : "labels added since cycle 1",
    yLabel: what,
    yDomain: [0, top],
    yFormat: (v) => `${Math.round(v * 100)}%`,
    integerX: true,
  });
}

export function scoresPlot(hist) {
  return histogram({
    edges: hist.edges,
    counts: hist.counts,
    marked: hist.selected_scores,
    title: `Acquisition scores (${hist.strategy}, ${hist.n} items scored)`,
    xLabel: `${hist.strategy} score`,
    markedLabel: "selected",
  });
}

export function annotatorsTable(people) {
  if (!people?.length) return h("p", { class: "muted" }, "No labels from people yet.");
  return h(
    "table",
    { class: "table", id: "annotators-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Annotator"),
        h("th", { class: "num" }, "Labels"),
        h("th", { class: "num", title: "with the other voters' majority" }, "Agrees with others"),
        h("th", { class: "num", title: "right on items with a gold label" }, "Gold accuracy"),
        h("th", { class: "num", title: "Dawid–Skene estimate from all votes" }, "Estimated"),
      ),
    ),
    h(
      "tbody",
      {},
      people.map((a) =>
        h(
          "tr",
          { "data-annotator-id": a.annotator_id },
          h("td", {}, a.name),
          h("td", { class: "num" }, String(a.labels)),
          h("td", { class: "num" }, measured(a.agreement, a.agreement_items)),
          h("td", { class: "num" }, measured(a.gold_accuracy, a.gold_items)),
          h("td", { class: "num" }, fmtPercent(a.estimated_accuracy)),
        ),
      ),
    ),
  );
}

// A share with its sample size; "not measurable" when nothing was there to measure it on.
function measured(value, n) {
  return value == null ? "not measurable" : `${fmtPercent(value)} (n=${n})`;
}

export function cyclesTable(cycles) {
  if (!cycles.length) return h("p", { class: "muted" }, "No cycles yet.");
  const num = (v) => h("td", { class: "num" }, v);
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      { class: "table", id: "cycles-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [
            "#",
            "State",
            "Strategy",
            "Labels",
            "Test acc.",
            "Train",
            "Evaluate",
            "Score",
            "Queued",
            "Created",
          ].map((t, i) => h("th", { class: i >= 3 && i < 9 ? "num" : null }, t)),
        ),
      ),
      h(
        "tbody",
        {},
        [...cycles]
          .sort((a, b) => b.number - a.number)
          .map((c) => {
            const m = c.metrics ?? {};
            const t = c.timings ?? {};
            return h(
              "tr",
              { "data-cycle-id": c.id, "data-state": c.state },
              h("td", {}, String(c.number)),
              h("td", {}, stateBadge(c.state)),
              h("td", {}, h("code", {}, m.strategy_used ?? c.strategy)),
              num(m.labels == null ? "–" : String(m.labels)),
              num(fmtPercent(m.test?.accuracy)),
              num(fmtSeconds(t.train_s)),
              num(fmtSeconds(t.evaluate_s)),
              num(fmtSeconds(t.score_s)),
              num(m.queued == null ? "–" : String(m.queued)),
              h("td", { class: "small muted" }, fmtTime(c.created_at)),
            );
          }),
      ),
    ),
  );
}

// What the model reads, in words: annotators see images either way (issue 19, item 1).
export function modelInput(spec) {
  const hp = spec.hparams ?? {};
  if (spec.name === "pretrained") {
    const how = hp.frozen === false ? "fine-tuned" : "frozen, embeddings cached";
    return `the images, through backbone ${hp.backbone ?? "?"} (${how})`;
  }
  const what = spec.input ? `feature vector "${spec.input}"` : "the images";
  return hp.init === "pretraining" ? `${what}, starting from the latest pretraining run` : what;
}

// The project's named feature vectors: length, coverage and which one the model takes.
export function featuresTable(sets) {
  if (!sets?.length) {
    return h("p", { class: "muted" }, "No feature vectors: the model reads the images.");
  }
  const num = (v) => h("td", { class: "num" }, v);
  return h(
    "table",
    { id: "features-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Length", "Items with it", "Missing", "Model input"].map((t, i) =>
          h("th", { class: i >= 1 && i < 4 ? "num" : null }, t),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      sets.map((f) =>
        h(
          "tr",
          { "data-feature": f.name },
          h("td", {}, h("code", {}, f.name)),
          num(String(f.dim)),
          num(String(f.items)),
          num(String(f.missing)),
          h("td", {}, f.model_input ? "yes" : ""),
        ),
      ),
    ),
  );
}
