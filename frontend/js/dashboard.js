// The engineer dashboard: one project at a time, polled every few seconds. Engineers (and
// admins) also get the actions card; for an annotator it is never built, and the API would
// refuse those calls anyway (403).
import { ApiError, download, get, isEngineer, patch, post, requireSignIn } from "./api.js";
import {
  FINISHED,
  RUNNING,
  accuracyPlot,
  annotatorsTable,
  cleaningPlot,
  cycleCard,
  cyclesTable,
  featuresTable,
  progressCard,
  scoresPlot,
  settingsCard,
} from "./dashboard-view.js";
import { $, h, projectIdFromUrl, renderHeader } from "./dom.js";
import { buildPretrainingCard, pretrainingRuns } from "./pretraining.js";

const POLL_MS = 3000;

const user = requireSignIn();
const engineer = isEngineer(user);
const view = {
  projectId: projectIdFromUrl(),
  project: null,
  cycles: [],
  progress: null,
  scoresCycleId: null, // the cycle whose histogram is drawn, so it is fetched once
  drawn: new Map(), // card id -> signature of the data last drawn (skip identical redraws)
  cancelArmed: null, // cycle id whose "Cancel" was clicked once (the second click cancels)
  strategies: [], // GET /strategies: every strategy the API accepts, with its kind and params
  pretraining: [], // GET /pretraining (engineers): the project's SimCLR runs, newest first
};

// ---- skeleton ---------------------------------------------------------------------------------

function card(id, extra = "") {
  return h("section", { class: `card ${extra}`, id });
}

function buildSkeleton(project) {
  const cards = [
    card("card-cycle"),
    card("card-progress"),
    card("card-accuracy"),
    project.kind === "clean" ? card("card-cleaning") : null,
    engineer ? card("card-scores") : null,
    engineer ? card("card-actions") : null,
    engineer ? card("card-pretraining") : null,
    engineer ? card("card-features") : null,
    card("card-annotators"),
    card("card-settings"),
    card("card-cycles", "wide"),
  ].filter(Boolean);
  $("#project").replaceChildren(
    h(
      "header",
      { class: "project-head" },
      h("h1", {}, project.name),
      h(
        "span",
        { class: "badge" },
        project.kind === "clean" ? "label cleaning" : "active learning",
      ),
      h("span", { class: "spacer" }),
      h("span", { id: "updated", class: "muted small" }),
      h("a", { class: "button primary", href: `/annotate.html?project=${project.id}` }, "Annotate"),
    ),
    ...(engineer
      ? []
      : [
          h(
            "p",
            { class: "muted small", id: "read-only" },
            "Read-only view: engineer actions need an engineer or admin token.",
          ),
        ]),
    h("div", { class: "cards" }, cards),
  );
  if (engineer) {
    buildActions(project);
    buildPretrainingCard($("#card-pretraining"), project, refresh);
  }
}

// ---- engineer actions ---------------------------------------------------------------------------

function buildActions(project) {
  const offered = view.strategies.filter((s) => s.kind === project.kind).map((s) => s.name);
  const names = [...new Set([project.strategy, ...offered])];
  const strategy = h(
    "select",
    { id: "strategy", "aria-label": "Strategy for the next cycle" },
    names.map((n) => h("option", { value: n, selected: n === project.strategy }, n)),
  );
  const format = h(
    "select",
    { id: "export-format", "aria-label": "Export format" },
    ["csv", "json", "jsonl"].map((f) => h("option", { value: f }, f)),
  );
  $("#card-actions").replaceChildren(
    h("h2", {}, "Actions"),
    h(
      "div",
      { class: "action-row" },
      strategy,
      h(
        "button",
        {
          id: "start-cycle",
          type: "button",
          class: "primary",
          onclick: () => startCycle(strategy.value),
        },
        "Start next cycle",
      ),
    ),
    h(
      "div",
      { class: "action-row" },
      h(
        "button",
        { id: "cancel-cycle", type: "button", class: "danger", onclick: cancelCycle },
        "Cancel cycle",
      ),
    ),
    h(
      "label",
      { class: "toggle" },
      h("input", {
        id: "auto-advance",
        type: "checkbox",
        checked: project.auto_advance,
        onchange: (e) => setAutoAdvance(e.target),
      }),
      " Auto-advance (start the next cycle when a batch is labelled)",
    ),
    h(
      "div",
      { class: "action-row" },
      format,
      h(
        "button",
        { id: "export", type: "button", onclick: () => exportLabels(format.value) },
        "Export labels",
      ),
    ),
    h("p", { id: "action-status", class: "notice", role: "status", "aria-live": "polite" }),
  );
}

function say(text, isError = false) {
  const el = $("#action-status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function act(what, fn) {
  try {
    await fn();
  } catch (err) {
    say(`${what} failed: ${err instanceof ApiError ? err.message : err}`, true);
    return;
  }
  await refresh();
}

function startCycle(strategy) {
  return act("Starting a cycle", async () => {
    const c = await post(`/projects/${view.projectId}/cycles`, { strategy });
    say(`Cycle ${c.number} started with ${c.strategy}.`);
  });
}

function cancelCycle() {
  const latest = latestCycle();
  if (!latest || FINISHED.has(latest.state)) return;
  // Two clicks: cancelling closes a batch that people may be labelling right now.
  if (view.cancelArmed !== latest.id) {
    view.cancelArmed = latest.id;
    $("#cancel-cycle").textContent = `Click again to cancel cycle ${latest.number}`;
    setTimeout(() => {
      if (view.cancelArmed === latest.id) view.cancelArmed = null;
      updateActions();
    }, 4000);
    return;
  }
  view.cancelArmed = null;
  return act("Cancelling", async () => {
    await post(`/projects/${view.projectId}/cycles/${latest.id}/cancel`);
    say(`Cycle ${latest.number} cancelled.`);
  });
}

function setAutoAdvance(box) {
  return act("Changing auto-advance", async () => {
    view.project = await patch(`/projects/${view.projectId}`, { auto_advance: box.checked });
    say(`Auto-advance is ${view.project.auto_advance ? "on" : "off"}.`);
  });
}

function exportLabels(format) {
  return act("Export", async () => {
    await download(
      `/projects/${view.projectId}/export?format=${format}`,
      `annoloop-project-${view.projectId}.${format}`,
    );
    say(`Exported as ${format}.`);
  });
}

function updateActions() {
  if (!engineer) return;
  const latest = latestCycle();
  const running = latest != null && RUNNING.has(latest.state);
  $("#start-cycle").disabled = running;
  $("#start-cycle").title = running ? `Cycle ${latest.number} is ${latest.state}` : "";
  const cancel = $("#cancel-cycle");
  cancel.disabled = !latest || FINISHED.has(latest.state);
  if (view.cancelArmed == null) {
    cancel.textContent =
      latest && !FINISHED.has(latest.state) ? `Cancel cycle ${latest.number}` : "Cancel cycle";
  }
  const box = $("#auto-advance");
  if (document.activeElement !== box) box.checked = view.project.auto_advance;
}

// ---- drawing ------------------------------------------------------------------------------

function latestCycle() {
  return view.cycles.reduce((a, c) => (a == null || c.number > a.number ? c : a), null);
}

// Redraw a card only when its data changed, so hover tooltips and text selection survive polls.
function draw(id, data, render) {
  const el = document.getElementById(id);
  if (!el) return;
  const signature = JSON.stringify(data);
  if (view.drawn.get(id) === signature) return;
  view.drawn.set(id, signature);
  el.replaceChildren(...[render()].flat().filter(Boolean));
}

function drawAll() {
  const latest = latestCycle();
  // While a cycle runs its card shows a running timer, so it is redrawn every poll.
  const live = latest && RUNNING.has(latest.state) ? Math.floor(Date.now() / 1000) : 0;
  draw("card-settings", view.project, () => settingsCard(view.project));
  draw("card-cycle", [latest, view.progress?.cycle, live], () => cycleCard(latest, view.progress));
  draw("card-progress", view.progress, () => progressCard(view.progress));
  const accuracy = view.cycles.map((c) => [
    c.number,
    c.metrics?.labels,
    c.metrics?.test?.accuracy,
    c.metrics?.strategy_used,
  ]);
  draw("card-accuracy", accuracy, () => [h("h2", {}, "Test accuracy"), accuracyPlot(view.cycles)]);
  draw(
    "card-cleaning",
    view.cycles.map((c) => c.metrics),
    () => [h("h2", {}, "Cleaning"), cleaningPlot(view.cycles)],
  );
  draw("card-annotators", view.progress?.per_annotator, () => [
    h("h2", {}, engineer ? "Annotators" : "Your labels"),
    annotatorsTable(view.progress?.per_annotator),
  ]);
  draw("card-cycles", view.cycles, () => [h("h2", {}, "Cycles"), cyclesTable(view.cycles)]);
  if (engineer) draw("pretraining-runs", view.pretraining, () => pretrainingRuns(view.pretraining));
  if (engineer) {
    draw("card-features", view.features, () => [
      h("h2", {}, "Feature vectors"),
      featuresTable(view.features),
    ]);
  }
  updateActions();
}

async function drawScores() {
  if (!engineer) return;
  // The last cycle that has stored scores (a running cycle has none until it finishes scoring).
  const scored = [...view.cycles]
    .filter((c) => c.scores_sha256)
    .sort((a, b) => b.number - a.number)[0];
  if (!scored) {
    draw("card-scores", null, () => [
      h("h2", {}, "Acquisition scores"),
      h("p", { class: "muted" }, "No cycle has scored the pool yet."),
    ]);
    return;
  }
  if (view.scoresCycleId === scored.id) return;
  try {
    const hist = await get(`/projects/${view.projectId}/cycles/${scored.id}/scores?bins=30`);
    view.scoresCycleId = scored.id;
    draw("card-scores", scored.id, () => [
      h("h2", {}, `Acquisition scores of cycle ${scored.number}`),
      scoresPlot(hist),
    ]);
  } catch (err) {
    if (!(err instanceof ApiError) || err.isNetwork) return; // try again at the next poll
    view.scoresCycleId = scored.id;
    draw("card-scores", scored.id, () => [
      h("h2", {}, "Acquisition scores"),
      h("p", { class: "muted" }, err.message),
    ]);
  }
}

// ---- polling -----------------------------------------------------------------------------

async function refresh() {
  const id = view.projectId;
  try {
    const [project, progress, cycles, pretraining, features] = await Promise.all([
      get(`/projects/${id}`),
      get(`/projects/${id}/progress`),
      get(`/projects/${id}/cycles`),
      engineer ? get(`/projects/${id}/pretraining`) : [],
      engineer ? get(`/projects/${id}/features`) : [],
    ]);
    Object.assign(view, { project, progress, cycles, pretraining, features });
    drawAll();
    await drawScores();
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("#updated").classList.remove("error");
  } catch (err) {
    const el = $("#updated");
    if (el) {
      el.textContent = `not updated: ${err.message} (retrying)`;
      el.classList.add("error");
    }
  }
}

async function renderNav(projects) {
  $("#projects-nav").replaceChildren(
    ...projects.map((p) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            href: `/dashboard.html?project=${p.id}`,
            "aria-current": p.id === view.projectId ? "page" : null,
          },
          p.name,
        ),
      ),
    ),
  );
}

async function init() {
  $("#header").replaceChildren(renderHeader(user, "dashboard"));
  const projects = await get("/projects");
  if (view.projectId == null && projects.length) {
    view.projectId = projects[0].id;
    history.replaceState(null, "", `?project=${view.projectId}`);
    $("#header").replaceChildren(renderHeader(user, "dashboard"));
  }
  renderNav(projects);
  if (view.projectId == null) {
    $("#project").replaceChildren(
      h("p", { class: "muted" }, "You are not a member of any project yet."),
    );
    return;
  }
  try {
    view.project = await get(`/projects/${view.projectId}`);
  } catch (err) {
    $("#project").replaceChildren(
      h("p", { class: "error" }, `Project ${view.projectId}: ${err.message}`),
    );
    return;
  }
  document.title = `annoloop — ${view.project.name}`;
  // The API's own list (one source of truth), read once: only engineers start cycles.
  if (engineer) view.strategies = await get("/strategies");
  buildSkeleton(view.project);
  await refresh();
  setInterval(refresh, POLL_MS);
}

init();
