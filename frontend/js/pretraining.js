// The pretraining card (engineers): a form that starts a SimCLR run on the project's pool, and
// the runs with their progress (epoch k of n, last loss). The form is built once; only the
// list is redrawn when the runs change, so typing survives the dashboard's polling.
import { ApiError, post } from "./api.js";
import { h } from "./dom.js";

const FIELDS = [
  // [key, label, default, step, min]
  ["epochs", "Epochs", 20, 1, 1],
  ["batch_size", "Batch size", 128, 1, 2],
  ["lr", "Learning rate", 0.001, "any", 0],
  ["temperature", "Temperature", 0.5, "any", 0],
  ["seed", "Seed (empty: the project's)", "", 1, 0],
];

export function buildPretrainingCard(el, projectId, onStarted) {
  const inputs = FIELDS.map(([key, label, value, step, min]) =>
    h(
      "label",
      { class: "field" },
      `${label} `,
      h("input", { id: `pretrain-${key}`, name: key, type: "number", value, step, min }),
    ),
  );
  const status = h("p", { id: "pretrain-status", class: "notice", role: "status" });
  const form = h(
    "form",
    {
      id: "pretrain-form",
      class: "pretrain-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const body = {};
        for (const [key] of FIELDS) {
          const raw = form.elements[key].value.trim();
          if (raw !== "") body[key] = Number(raw);
        }
        try {
          const run = await post(`/projects/${projectId}/pretraining`, body);
          status.textContent = `Pretraining run ${run.id} queued.`;
          status.classList.remove("error");
        } catch (err) {
          status.textContent = `Starting pretraining failed: ${err instanceof ApiError ? err.message : err}`;
          status.classList.add("error");
          return;
        }
        await onStarted();
      },
    },
    inputs,
    h("button", { id: "start-pretraining", type: "submit", class: "primary" }, "Start pretraining"),
  );
  el.replaceChildren(
    h("h2", {}, "Self-supervised pretraining"),
    h(
      "p",
      { class: "muted small" },
      'SimCLR on the pool; cycles with model_spec.hparams.init = "pretraining" start from the latest finished run.',
    ),
    h("div", { id: "pretraining-runs" }),
    form,
    status,
  );
}

export function pretrainingRuns(runs) {
  if (!runs || runs.length === 0) return h("p", { class: "muted" }, "No pretraining run yet.");
  return h(
    "table",
    { class: "table", id: "pretraining-table" },
    h(
      "thead",
      {},
      h("tr", {}, ["run", "status", "progress", "loss"].map((c) => h("th", {}, c))),
    ),
    h(
      "tbody",
      {},
      runs.map((r) =>
        h(
          "tr",
          { "data-status": r.status, "data-run": r.id },
          h("td", {}, String(r.id)),
          h("td", {}, r.error ? `${r.status}: ${r.error}` : r.status),
          h("td", { class: "pretrain-progress" }, `epoch ${r.epochs_done} of ${r.epochs}`),
          h("td", { class: "pretrain-loss" }, r.last_loss == null ? "–" : r.last_loss.toFixed(4)),
        ),
      ),
    ),
  );
}
