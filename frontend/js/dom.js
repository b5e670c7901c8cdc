// Small DOM and formatting helpers shared by the pages (no framework: the pages are small).

// h("button", {class: "x", onclick: fn}, "text", child) -> element. Attributes starting with
// "on" become listeners; null/false attributes are left out; children may be nested arrays.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    // Through the CSSOM: the pages' CSP refuses style attributes written as markup.
    else if (name === "style") el.style.cssText = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function projectIdFromUrl() {
  const id = Number(new URLSearchParams(location.search).get("project"));
  return Number.isInteger(id) && id > 0 ? id : null;
}

export function fmtSeconds(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 90) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 90) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtClock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

export function fmtPercent(x, digits = 1) {
  return x == null || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(digits)} %`;
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// A progress bar: <div class="bar"><span style="width:..%"></span></div> with a text label.
export function progressBar(value, max, label) {
  const fraction = max ? Math.min(1, value / max) : 0;
  const bar = h("div", {
    class: "bar",
    role: "progressbar",
    "aria-valuemin": 0,
    "aria-valuemax": max ?? 0,
    "aria-valuenow": value,
    "aria-label": label,
  });
  bar.append(h("span", { style: `width:${(100 * fraction).toFixed(1)}%` }));
  return bar;
}

// The header every page shares: brand, the signed-in person, links, sign out.
export function renderHeader(user, current) {
  const link = (href, text, key) =>
    h("a", { href, "aria-current": current === key ? "page" : null }, text);
  const project = new URLSearchParams(location.search).get("project");
  const q = project ? `?project=${project}` : "";
  return h(
    "nav",
    { class: "topbar" },
    h("a", { class: "brand", href: "/" }, "annoloop"),
    user ? link(`/annotate.html${q}`, "Annotate", "annotate") : null,
    user ? link(`/dashboard.html${q}`, "Dashboard", "dashboard") : null,
    h("span", { class: "spacer" }),
    user ? h("span", { class: "who" }, `${user.name} · ${user.role}`) : null,
    user ? h("a", { href: "/?signout=1", class: "signout" }, "Sign out") : null,
  );
}
