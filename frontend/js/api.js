// The REST client every page uses: bearer token from sessionStorage, errors as ApiError.
// sessionStorage (not localStorage) so a token dies with the tab and never outlives a shared
// annotation workstation's session.

const TOKEN_KEY = "annoloop.token";
const ME_KEY = "annoloop.me";
export const API = "/api/v1";

export class ApiError extends Error {
  // status 0 = the request never got an HTTP answer (offline, connection reset, aborted).
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
  get isNetwork() {
    return this.status === 0 || this.status >= 500;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function me() {
  const raw = sessionStorage.getItem(ME_KEY);
  return raw ? JSON.parse(raw) : null;
}

export function isEngineer(user) {
  return user != null && (user.role === "engineer" || user.role === "admin");
}

export async function signIn(tokenValue) {
  const user = await request("GET", "/me", { token: tokenValue });
  sessionStorage.setItem(TOKEN_KEY, tokenValue);
  sessionStorage.setItem(ME_KEY, JSON.stringify(user));
  return user;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ME_KEY);
}

// Pages other than the sign-in page call this first; without a token there is nothing to show.
export function requireSignIn() {
  const user = me();
  if (!token() || !user) {
    location.replace(`/?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error("not signed in");
  }
  return user;
}

function authHeaders(tokenValue) {
  return { Authorization: `Bearer ${tokenValue ?? token()}` };
}

// One request; resolves to the parsed JSON (null for a 204), or with `raw: true` to the
// Response unread (images, downloads, or when a header such as Date is wanted).
export async function request(method, path, { body, token: tokenValue, raw = false } = {}) {
  const headers = authHeaders(tokenValue);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", "The server could not be reached.", String(err));
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // a proxy's HTML error page: keep the status
    }
    const e = payload?.error ?? {};
    const error = new ApiError(
      response.status,
      e.code ?? `http_${response.status}`,
      e.message ?? `${response.status} ${response.statusText}`,
      e.detail,
    );
    if (response.status === 401 && tokenValue === undefined) {
      signOut(); // revoked or expired token: back to the sign-in page
      location.replace(
        `/?expired=1&next=${encodeURIComponent(location.pathname + location.search)}`,
      );
    }
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, { body: body ?? {} });
export const patch = (path, body) => request("PATCH", path, { body });

// The server's clock from the Date header, so a lease countdown is right on a skewed client.
export function serverNow(response) {
  const header = response?.headers?.get("Date");
  const t = header ? Date.parse(header) : NaN;
  return Number.isNaN(t) ? Date.now() : t;
}

// Image payloads need the Authorization header, which <img src> cannot send: fetch, blob: URL.
export async function payloadUrl(itemId) {
  const response = await request("GET", `/items/${itemId}/payload`, { raw: true });
  return URL.createObjectURL(await response.blob());
}

// Downloads (exports) go the same way: fetch with the header, then a temporary <a download>.
export async function download(path, filename) {
  const response = await request("GET", path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// Idempotency keys: crypto.randomUUID exists only in secure contexts (https, localhost), and a
// self-hosted server is often reached over plain http on a LAN, so fall back to random bytes.
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
