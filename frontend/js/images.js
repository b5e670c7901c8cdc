// Item images as blob: URLs (the payload route needs the Authorization header, which an
// <img src> cannot send). A few recent ones stay cached so that undo shows its item at once;
// older URLs are revoked so a long session does not leak memory.
import { payloadUrl } from "./api.js";

const KEEP = 4;
const cache = new Map(); // item id -> Promise<blob URL>, in insertion (= recency) order

export function imageFor(itemId) {
  let url = cache.get(itemId);
  if (url) {
    cache.delete(itemId); // re-insert: most recent last
  } else {
    url = payloadUrl(itemId);
    url.catch(() => cache.delete(itemId)); // a failed fetch is retried next time
  }
  cache.set(itemId, url);
  while (cache.size > KEEP) {
    const [oldest, old] = cache.entries().next().value;
    cache.delete(oldest);
    old.then(
      (u) => URL.revokeObjectURL(u),
      () => {},
    );
  }
  return url;
}

// Put `url` into `img` and resolve once it is decoded, so the swap shows no half-drawn frame.
export async function show(img, url) {
  if (img.src === url) return;
  img.src = url;
  try {
    await img.decode();
  } catch {
    // decode() rejects for a detached image or an aborted load; the <img> still shows it
  }
}
