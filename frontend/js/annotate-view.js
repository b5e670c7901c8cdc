// DOM for the annotator page: class buttons, the message shown instead of an item, progress.
// The controller (annotate.js) owns the state and calls these to draw it.
import { $, fmtPercent, h, progressBar } from "./dom.js";

// The key that picks each class. Usually 1..9 then 0 for the first ten classes (the digit row,
// left to right). When the classes ARE the digits (MNIST: "0".."9") each digit picks its own
// class instead: pressing 5 for a five must never label it "4".
export function classKeys(classes) {
  const digits = classes.length <= 10 && classes.every((c) => /^[0-9]$/.test(c));
  if (digits && new Set(classes).size === classes.length) return [...classes];
  return classes.map((_, i) => (i < 9 ? String(i + 1) : i === 9 ? "0" : null));
}

export function renderClassButtons(classes, keys, onPick) {
  const buttons = classes.map((name, i) => {
    const key = keys[i];
    return h(
      "button",
      {
        type: "button",
        class: key === name ? "class-button key-is-name" : "class-button",
        "data-class-index": i,
        "aria-pressed": "false",
        "aria-label": key ? `Label as ${name} (key ${key})` : `Label as ${name}`,
        onclick: () => onPick(i),
      },
      // A digit class's key is its own name: no need to show it twice.
      key && key !== name ? h("kbd", {}, key) : null,
      h("span", { class: "class-name" }, name),
    );
  });
  $("#classes").replaceChildren(...buttons);
  // Long class lists get a denser grid so they still fit beside the image.
  $("#classes").classList.toggle("many", classes.length > 12);
  return buttons;
}

export function markSelected(buttons, index) {
  buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(i === index)));
}

// What the stage shows when there is no item: a headline, a line of detail, maybe a button.
export function stageMessage(title, detail, action) {
  return [
    h("div", { class: "stage-title" }, title),
    detail ? h("div", { class: "muted" }, detail) : null,
    action
      ? h("button", { type: "button", class: "primary", onclick: action.run }, action.label)
      : null,
  ];
}

export function renderProgress(progress, sessionLabels, meId) {
  const parts = [
    h(
      "div",
      { class: "stat" },
      h("span", { class: "stat-label" }, "This session"),
      h("span", { id: "session-labels", class: "stat-value" }, String(sessionLabels)),
      h("span", { class: "muted" }, sessionLabels === 1 ? " label" : " labels"),
    ),
  ];
  if (progress?.cycle) {
    const c = progress.cycle;
    parts.push(
      h(
        "div",
        { class: "stat" },
        h("span", { class: "stat-label" }, `Batch of cycle ${c.number}`),
        h("span", { id: "batch-progress", class: "stat-value" }, `${c.done} / ${c.queued}`),
        h("span", { class: "muted" }, ` items done · ${c.state}`),
      ),
      progressBar(c.done, c.queued, "Batch progress"),
    );
  }
  if (progress) {
    const budget = progress.label_budget;
    parts.push(
      h(
        "div",
        { class: "stat" },
        h("span", { class: "stat-label" }, "Project budget"),
        h(
          "span",
          { id: "budget-progress", class: "stat-value" },
          budget == null ? `${progress.labels_spent}` : `${progress.labels_spent} / ${budget}`,
        ),
        h("span", { class: "muted" }, budget == null ? " labels (no limit)" : " labels"),
      ),
      budget == null ? null : progressBar(progress.labels_spent, budget, "Label budget"),
    );
    const mine = progress.per_annotator.find((a) => a.annotator_id === meId);
    if (mine?.agreement != null) {
      parts.push(
        h(
          "div",
          { class: "stat small" },
          h("span", { class: "stat-label" }, "Agreement with the majority"),
          h("span", { class: "stat-value" }, fmtPercent(mine.agreement, 0)),
        ),
      );
    }
  }
  $("#progress").replaceChildren(...parts.filter(Boolean));
}

// Title and text for a queue_empty answer, from the reason the server gives.
export function emptyMessage(out) {
  const by = "New items appear here by themselves.";
  if (out.reason === "others_needed") {
    const n = out.waiting_for_others ?? 0;
    const items = n === 1 ? "1 queued item waits" : `${n} queued items wait`;
    return [
      "Nothing for you right now",
      `${items} for a label from someone else (you have labelled or skipped them). ${by}`,
    ];
  }
  if (out.reason === "pool_spent") {
    return ["All done", "Every item of this project is labelled. Thank you!"];
  }
  const state = out.cycle_state;
  if (out.reason === "cycle_running" || ["created", "training", "scoring"].includes(state)) {
    return [
      "Queue empty — the model is learning",
      `The model is learning from the new labels (${state}). ${by}`,
    ];
  }
  return ["Queue empty — waiting for the next cycle", `No cycle is queueing items right now. ${by}`];
}
