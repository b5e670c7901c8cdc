// The pretraining card (engineers): a form that starts a SimCLR or patch k-means run on the
// project's pool, and the runs with their progress (epoch k of n, last loss). The form is built
// once; only the list is redrawn when the runs change, so typing survives the dashboard's
// polling. Only the chosen method's fields are shown and sent (the API refuses the others').
// A project whose model is `pretrained` (a frozen backbone) has no body of its own for SimCLR to
// train: its form asks which one (the API requires it there and refuses it elsewhere).
import { ApiError, post } from "./api.js";
import { h } from "./dom.js";

const FIELDS = [
  // [key, label, default, step, min, method (null: both)]
  ["epochs", "Epochs", 20, 1, 1, "simclr"],
  ["batch_size", "Batch size", 128, 1, 2, "simclr"],
  ["lr", "Learning rate", 0.001, "any", 0, "simclr"],
  ["temperature", "Temperature", 0.5, "any", 0, "simclr"],
  ["patch", "Patch side", 6, 1, 2, "patch_kmeans"],
  ["centroids", "Centroids", 800, 1, 2, "patch_kmeans"],
  ["patches", "Patches", 100000, 1, 100, "patch_kmeans"],
  ["iterations", "Iterations", 10, 1, 1, "patch_kmeans"],
  ["seed", "Seed (empty: the project's)", "", 1, 0, null],
];
const METHODS = [
  ["simclr", "SimCLR (trains the model's body)"],
  ["patch_kmeans", "Patch k-means (minutes on a CPU; images)"],
];
// The bodies a SimCLR run can train for a pretrained project (app/pretraining/schemas.py).
const ARCHITECTURES = [
  ["", "choose one"],
  ["small_cnn", "small_cnn (fast)"],
  ["resnet18", "resnet18"],
];

export function buildPretrainingCard(el, project, onStarted) {
  const projectId = project.id;
  const pretrained = project.model_spec?.name === "pretrained";
  const inputs = FIELDS.map(([key, label, value, step, min, method]) =>
    h(
      "label",
      { class: "field", "data-method": method ?? "" },
      `${label} `,
      h("input", { id: `pretrain-${key}`, name: key, type: "number", value, step, min }),
    ),
  );
  // Left unchosen, nothing is sent and the API's 422 says why one is needed.
  const architecture = pretrained
    ? h(
        "label",
        { class: "field", "data-method": "simclr" },
        "Body to train ",
        h(
          "select",
          { id: "pretrain-architecture", name: "architecture" },
          ARCHITECTURES.map(([value, text]) => h("option", { value }, text)),
        ),
      )
    : null;
  if (architecture) inputs.unshift(architecture);
  const chosen = () => form.elements.method.value;
  const show = () => {
    for (const label of inputs) {
      const method = label.dataset.method;
      label.hidden = method !== "" && method !== chosen();
    }
  };
  const select = h(
    "select",
    { id: "pretrain-method", name: "method", onchange: show },
    METHODS.map(([value, text]) => h("option", { value }, text)),
  );
  const status = h("p", { id: "pretrain-status", class: "notice", role: "status" });
  const form = h(
    "form",
    {
      id: "pretrain-form",
      class: "pretrain-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { method: chosen() };
        for (const [key, , , , , method] of FIELDS) {
          if (method && method !== body.method) continue;
          const raw = form.elements[key].value.trim();
          if (raw !== "") body[key] = Number(raw);
        }
        const simclr = body.method === "simclr";
        const arch = architecture && simclr ? form.elements.architecture.value : "";
        if (arch !== "") body.architecture = arch;
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
    h("label", { class: "field" }, "Method ", select),
    inputs,
    h("button", { id: "start-pretraining", type: "submit", class: "primary" }, "Start pretraining"),
  );
  show();
  el.replaceChildren(
    h("h2", {}, "Self-supervised pretraining"),
    h(
      "p",
      { class: "muted small" },
      'On the pool. Cycles with model_spec.hparams.init = "pretraining" start from the latest SimCLR run; a pretrained model with hparams.backbone = "pretraining" trains a head on the latest run\'s frozen features.',
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
      h("tr", {}, ["run", "status", "method", "progress", "loss"].map((c) => h("th", {}, c))),
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
          h("td", {}, r.method === "patch_kmeans" ? "patch k-means" : "SimCLR"),
          h(
            "td",
            { class: "pretrain-progress" },
            `${r.method === "patch_kmeans" ? "step" : "epoch"} ${r.epochs_done} of ${r.epochs}`,
          ),
          h("td", { class: "pretrain-loss" }, r.last_loss == null ? "–" : r.last_loss.toFixed(4)),
        ),
      ),
    ),
  );
}
