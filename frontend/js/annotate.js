// The annotator page: one leased item at a time, labelled by key or click.
//
// Keys: 1-9 and 0 choose one of the first ten classes (when the classes are the digits
// themselves, each digit picks its own class), Enter saves the choice (a click on a
// class saves at once), S skips, U or Backspace undoes the last label, Esc clears the choice.
// A label is sent with an idempotency key made once per submission; after a network error the
// SAME key is resent until the server answers, so a label can never be counted twice.
import {
  ApiError,
  get,
  newIdempotencyKey,
  post,
  request,
  requireSignIn,
  serverNow,
} from "./api.js";
import {
  classKeys,
  emptyMessage,
  markSelected,
  renderClassButtons,
  renderProgress,
  stageMessage,
} from "./annotate-view.js";
import { $, fmtClock, projectIdFromUrl, renderHeader } from "./dom.js";
import { imageFor, show } from "./images.js";

const EMPTY_POLL_MS = 3000; // queue empty: the next cycle's items should show up promptly
const SPENT_POLL_MS = 15000; // budget spent: only an engineer raising it changes anything
// Progress is shared by every annotator's page, so it is asked for sparingly: every 10 s, and
// at most every 3 s while labelling (the session count and budget update locally at once).
const PROGRESS_POLL_MS = 10_000;
const PROGRESS_AFTER_LABEL_MS = 3000;
const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 15000];
const WARN_MS = 60_000; // the countdown turns red in the last minute

const user = requireSignIn();
const projectId = projectIdFromUrl();
const img = $("#item-image");
const stage = $("#stage");

const state = {
  project: null,
  phase: "loading", // loading | leased | submitting | empty | spent | expired | error
  lease: null,
  item: null,
  deadline: null, // performance.now() when the lease runs out
  selected: null,
  pending: null, // the label being saved: {itemId, classIndex, key}
  sessionLabels: 0,
  undoable: 0, // labels of this session that may still be undone
  progress: null,
  cycleId: null, // the cycle of the item shown
  buttons: [],
  keys: [], // keys[i] picks class i (see classKeys)
  timer: null, // the one scheduled poll or retry
  retry: null, // what the banner's "Retry now" runs
  attempts: 0,
  seq: 0, // bumped by every request that decides what is shown; older answers are dropped
};

// ---- phases -------------------------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  stage.dataset.state = phase;
  const labelling = phase === "leased" || phase === "submitting" || phase === "loading";
  for (const b of state.buttons) b.disabled = !labelling;
  $("#skip").disabled = phase !== "leased";
  $("#undo").disabled = state.undoable <= 0 || phase === "loading" || phase === "submitting";
  if (phase !== "leased" && phase !== "submitting" && phase !== "loading") {
    img.hidden = true;
    delete stage.dataset.itemId;
    $("#countdown").textContent = "";
    $("#item-caption").textContent = "";
  }
}

function showMessage(title, detail, action) {
  $("#stage-message").replaceChildren(...stageMessage(title, detail, action).filter(Boolean));
}

function clearTimer() {
  clearTimeout(state.timer);
  state.timer = null;
}

function notice(text) {
  $("#notice").textContent = text ?? "";
}

// ---- the network-error banner ---------------------------------------------------------------

function failed(err, again, what) {
  if (!err.isNetwork) {
    // A refusal (404: not a member any more, 403, ...) will not heal by retrying on a timer.
    recovered();
    setPhase("error");
    showMessage(what, err.message, { label: "Try again", run: again });
    return;
  }
  const delay = RETRY_DELAYS_MS[Math.min(state.attempts, RETRY_DELAYS_MS.length - 1)];
  state.attempts += 1;
  state.retry = again;
  $("#banner-text").textContent =
    `${what} ${err.message} Retrying in ${Math.round(delay / 1000)} s (attempt ${state.attempts}).`;
  $("#banner").hidden = false;
  clearTimer();
  state.timer = setTimeout(again, delay);
}

function recovered() {
  state.attempts = 0;
  state.retry = null;
  $("#banner").hidden = true;
}

function retryNow() {
  if (!state.retry) return;
  clearTimer();
  state.retry();
}

// ---- asking for the next item ------------------------------------------------------------

// `quiet`: a background poll while the queue is empty, which must not flash "Loading…".
async function loadNext({ quiet = false } = {}) {
  clearTimer();
  if (!quiet) setPhase("loading");
  const ticket = ++state.seq;
  let out;
  let now;
  try {
    // ahead=1: the server leases the item after this one too, so its image loads while
    // this one is labelled and the next item appears at once.
    const response = await request("GET", `/projects/${projectId}/next?ahead=1`, { raw: true });
    now = serverNow(response);
    out = await response.json();
  } catch (err) {
    if (ticket !== state.seq) return;
    return failed(toApiError(err), () => loadNext({ quiet }), "Could not get the next item.");
  }
  // A background poll that an undo or skip overtook must not replace what they showed.
  if (ticket !== state.seq) return;
  return applyNext(out, now);
}

async function applyNext(out, now) {
  if (out.status === "leased") {
    let url;
    try {
      url = await imageFor(out.item.id); // the image first: the item shows complete or not at all
    } catch (err) {
      return failed(toApiError(err), () => applyNext(out, now), "Could not load the image.");
    }
    recovered();
    state.lease = out.lease;
    state.item = out.item;
    state.cycleId = out.cycle_id;
    // `now` comes from the Date header (whole seconds, rounded down); a lease cannot have
    // been made after "now", so its creation time bounds the error.
    const serverTime = Math.max(now, Date.parse(out.lease.created_at));
    state.deadline = performance.now() + (Date.parse(out.lease.expires_at) - serverTime);
    await show(img, url);
    // Tiny images (MNIST is 28×28) are scaled up with hard pixel edges instead of a blur.
    img.classList.toggle("pixelated", Math.max(out.item.width, out.item.height) <= 256);
    img.style.aspectRatio = `${out.item.width} / ${out.item.height}`;
    img.alt = `Item ${out.item.external_id}`;
    img.hidden = false;
    $("#stage-message").replaceChildren();
    $("#item-caption").textContent =
      `${out.item.external_id} · ${out.item.width}×${out.item.height} · cycle ${out.cycle_id ?? "–"}`;
    select(null);
    stage.dataset.itemId = out.item.id;
    stage.dataset.leaseId = out.lease.id;
    stage.dataset.aheadItemId = out.ahead ? out.ahead.item.id : "";
    if (out.ahead) imageFor(out.ahead.item.id).catch(() => {}); // a failure retries when shown
    setPhase("leased");
    tick();
    return;
  }
  recovered();
  state.lease = null;
  state.item = null;
  if (out.status === "queue_empty") {
    setPhase("empty");
    showMessage(...emptyMessage(out));
    state.timer = setTimeout(() => loadNext({ quiet: true }), EMPTY_POLL_MS);
  } else {
    setPhase("spent");
    showMessage(
      "Budget spent",
      "This project has all the labels it may use. Thank you! Nothing more to label here.",
    );
    state.timer = setTimeout(() => loadNext({ quiet: true }), SPENT_POLL_MS);
  }
}

// ---- labelling, skipping, undoing ---------------------------------------------------------------

function select(index) {
  state.selected = index;
  markSelected(state.buttons, index);
  if (index != null) state.buttons[index].focus({ preventScroll: true });
}

async function submit(classIndex) {
  if (state.phase !== "leased" || state.pending) return;
  state.pending = { itemId: state.item.id, classIndex, key: newIdempotencyKey() };
  select(classIndex); // keep showing what is being saved
  document.activeElement?.blur();
  notice("");
  setPhase("submitting");
  await sendPending();
}

async function sendPending() {
  clearTimer();
  const p = state.pending;
  try {
    await post(`/items/${p.itemId}/annotations`, {
      class_index: p.classIndex,
      idempotency_key: p.key,
    });
  } catch (err) {
    const e = toApiError(err);
    if (e.isNetwork) return failed(e, sendPending, "Your label is not saved yet.");
    state.pending = null;
    recovered();
    return labelRefused(e);
  }
  state.pending = null;
  recovered();
  state.sessionLabels += 1;
  state.undoable += 1;
  countLocally(+1);
  drawProgress();
  scheduleProgress();
  await loadNext();
}

async function labelRefused(err) {
  if (err.code === "lease_expired" || err.code === "not_leased") return expire();
  if (err.code === "already_labelled") {
    notice("That item already had your label.");
    return loadNext();
  }
  if (err.code === "budget_spent") {
    // Give the item back so that it is not held until the lease runs out.
    await post(`/leases/${state.lease.id}/skip`).catch(() => {});
    return loadNext();
  }
  notice(`Not saved: ${err.message}`);
  select(null);
  setPhase("leased");
}

function expire() {
  state.lease = null;
  setPhase("expired");
  showMessage(
    "Time ran out on this item",
    "Your hold on it expired, so it may have gone to someone else.",
    { label: "Get the next item (Enter)", run: () => loadNext() },
  );
}

async function skip() {
  if (state.phase !== "leased" || state.pending) return;
  const lease = state.lease;
  document.activeElement?.blur();
  setPhase("loading");
  try {
    await post(`/leases/${lease.id}/skip`);
  } catch (err) {
    const e = toApiError(err);
    if (e.isNetwork) {
      notice(`Skip failed: ${e.message}`);
      setPhase("leased");
      return;
    }
    // lease_closed (expired meanwhile) or gone: either way, move on.
  }
  notice("Skipped.");
  await loadNext();
}

async function undo() {
  const before = state.phase;
  if (state.undoable <= 0 || state.pending || before === "loading" || before === "submitting") {
    return;
  }
  document.activeElement?.blur();
  clearTimer();
  setPhase("loading");
  const ticket = ++state.seq;
  let response;
  try {
    response = await request("POST", `/projects/${projectId}/annotations:undo`, { raw: true });
  } catch (err) {
    const e = toApiError(err);
    if (e.isNetwork) {
      // Undo carries no idempotency key: it may have happened. Never resend it blindly (a
      // second undo would withdraw an older label too); show what the server holds now.
      notice("Undo got no answer from the server; check the item shown before undoing again.");
      return loadNext();
    }
    if (e.code === "nothing_to_undo" || e.code === "undo_closed") state.undoable = 0;
    notice(`Cannot undo: ${e.message}`);
    if (before === "leased" && state.item) setPhase("leased");
    else await loadNext();
    return;
  }
  state.undoable -= 1;
  state.sessionLabels -= 1;
  countLocally(-1);
  drawProgress();
  scheduleProgress();
  const out = await response.json();
  if (ticket !== state.seq) return;
  await applyNext(out, serverNow(response));
  notice("Your last label was withdrawn: label this item again.");
}

function toApiError(err) {
  return err instanceof ApiError
    ? err
    : new ApiError(0, "network_error", String(err.message ?? err));
}

// ---- lease countdown -----------------------------------------------------------------------

function tick() {
  if (state.phase !== "leased" || state.deadline == null) return;
  const left = state.deadline - performance.now();
  const el = $("#countdown");
  el.textContent = `${fmtClock(left)} left`;
  el.classList.toggle("warn", left < WARN_MS);
  if (left <= 0) expire();
}

// ---- progress --------------------------------------------------------------------------------

// Move the shown progress by one label at once rather than at the next poll: a label spends
// exactly one from the budget, and with one label per item (active learning) finishes an item.
function countLocally(delta) {
  const pr = state.progress;
  if (!pr) return;
  pr.labels_spent += delta;
  const oneEach = state.project.labels_per_item === 1 && state.project.kind === "acquire";
  if (oneEach && pr.cycle && pr.cycle.id === state.cycleId) pr.cycle.done += delta;
}

function drawProgress() {
  renderProgress(state.progress, state.sessionLabels, user.id);
}

async function refreshProgress() {
  try {
    state.progress = await get(`/projects/${projectId}/progress`);
    drawProgress();
  } catch {
    // progress is decoration; the next poll tries again
  }
}

let progressSoon = null;
function scheduleProgress() {
  // After a label, refresh soon, but not once per label however fast labels come.
  progressSoon ??= setTimeout(() => {
    progressSoon = null;
    refreshProgress();
  }, PROGRESS_AFTER_LABEL_MS);
}

// ---- keyboard --------------------------------------------------------------------------------

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest?.("input, textarea, select")) return;
  const key = event.key;
  if (/^[0-9]$/.test(key)) {
    const index = state.keys.indexOf(key);
    if (index >= 0 && state.phase === "leased" && !state.pending) select(index);
    event.preventDefault();
    return;
  }
  if (event.repeat && key !== "Escape") return; // a held key must not save or skip repeatedly
  const focused = document.activeElement;
  if (key === "Enter") {
    if (!$("#banner").hidden) {
      event.preventDefault();
      retryNow();
    } else if (focused?.classList.contains("class-button")) {
      event.preventDefault();
      submit(Number(focused.dataset.classIndex));
    } else if (focused && focused !== document.body && focused.matches("button, a")) {
      // Skip, Undo, a link: let the browser activate what has the focus.
    } else if (state.phase === "leased" && state.selected != null) {
      event.preventDefault();
      submit(state.selected);
    } else if (state.phase === "expired") {
      event.preventDefault();
      loadNext();
    }
  } else if (key === "s" || key === "S") {
    event.preventDefault();
    skip();
  } else if (key === "u" || key === "U" || key === "Backspace") {
    event.preventDefault();
    undo();
  } else if (key === "Escape") {
    select(null);
    document.activeElement?.blur();
  }
}

// ---- start -------------------------------------------------------------------------------

async function init() {
  $("#header").replaceChildren(renderHeader(user, "annotate"));
  if (projectId == null) {
    setPhase("error");
    showMessage("No project chosen", "Pick a project on the start page.", {
      label: "Choose a project",
      run: () => location.assign("/"),
    });
    return;
  }
  try {
    state.project = await get(`/projects/${projectId}`);
  } catch (err) {
    const e = toApiError(err);
    if (e.isNetwork) return failed(e, init, "Could not load the project.");
    setPhase("error");
    showMessage("Project not available", e.message, {
      label: "Choose a project",
      run: () => location.assign("/"),
    });
    return;
  }
  document.title = `annoloop — annotate ${state.project.name}`;
  $("#project-name").textContent = state.project.name;
  state.keys = classKeys(state.project.classes);
  state.buttons = renderClassButtons(state.project.classes, state.keys, (i) => submit(i));
  // Tab onto a class selects it too, so Enter saves what has the focus ring.
  state.buttons.forEach((b, i) =>
    b.addEventListener("focus", () => {
      if (state.selected !== i && state.phase === "leased") select(i);
    }),
  );
  $("#skip").addEventListener("click", skip);
  $("#undo").addEventListener("click", undo);
  $("#banner-retry").addEventListener("click", retryNow);
  document.addEventListener("keydown", onKey);
  setInterval(tick, 250);
  setInterval(refreshProgress, PROGRESS_POLL_MS);
  drawProgress();
  refreshProgress();
  await loadNext();
}

init();
