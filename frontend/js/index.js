// Sign-in and project picker: the token is checked with GET /me, then each project the person
// can see links to the annotator page and the dashboard.
import { ApiError, get, me, signIn, signOut, token } from "./api.js";
import { $, h, renderHeader } from "./dom.js";

const params = new URLSearchParams(location.search);

function showSignIn(message) {
  $("#header").replaceChildren(renderHeader(null, "home"));
  $("#signin").hidden = false;
  $("#projects").hidden = true;
  const error = $("#signin-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("#token").focus();
}

// Only a path on this origin, as the browser itself resolves it: a prefix test let
// "/\evil.example/" and "/<tab>/evil.example/" through (browsers read "\" as "/" and drop tabs).
export function sameOriginPath(next) {
  if (!next) return null;
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return null;
  }
  return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
}

async function showProjects(user) {
  // Coming back from a page that needed a sign-in: go straight back there.
  const next = sameOriginPath(params.get("next"));
  if (next) {
    location.replace(next);
    return;
  }
  $("#header").replaceChildren(renderHeader(user, "home"));
  $("#signin").hidden = true;
  $("#projects").hidden = false;
  const list = $("#project-list");
  list.replaceChildren(h("li", { class: "muted" }, "Loading…"));
  const projects = await get("/projects");
  if (!projects.length) {
    list.replaceChildren(h("li", { class: "muted" }, "You are not a member of any project yet."));
    return;
  }
  list.replaceChildren(
    ...projects.map((p) =>
      h(
        "li",
        { "data-project-id": p.id },
        h("div", { class: "project-name" }, p.name),
        h(
          "div",
          { class: "muted small" },
          `${p.kind === "clean" ? "label cleaning" : "active learning"} · ${p.classes.length} classes · ` +
            `${p.labels_spent}${p.label_budget != null ? ` / ${p.label_budget}` : ""} labels`,
        ),
        h(
          "div",
          { class: "actions" },
          h("a", { class: "button primary", href: `/annotate.html?project=${p.id}` }, "Annotate"),
          h("a", { class: "button", href: `/dashboard.html?project=${p.id}` }, "Dashboard"),
        ),
      ),
    ),
  );
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("#token").value.trim();
  try {
    await showProjects(await signIn(value));
  } catch (err) {
    const unknown = err instanceof ApiError && err.status === 401;
    showSignIn(unknown ? "That token is not valid (or was revoked)." : err.message);
  }
});

if (params.has("signout")) {
  signOut();
  history.replaceState(null, "", "/");
}
if (token() && me()) {
  showProjects(me()).catch((err) => showSignIn(err.message));
} else {
  showSignIn(params.has("expired") ? "Your session ended; please sign in again." : null);
}
