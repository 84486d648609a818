// The page's only way to the service: its public HTTP API, same-origin, with the user's API key.

const KEY_STORAGE = "facesearch.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function storedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

// Asked for a key on a 401; set by the app (a dialog). Resolves to the key, or null when dismissed.
let keyPrompt = async () => null;
export function onKeyNeeded(prompt) {
  keyPrompt = prompt;
}

// One prompt for every request that got a 401 at the same time.
let pendingPrompt = null;
async function askForKey(reason) {
  pendingPrompt ??= keyPrompt(reason).finally(() => {
    pendingPrompt = null;
  });
  return pendingPrompt;
}

function withKey(headers = {}) {
  const key = storedKey();
  return key ? { ...headers, "X-API-Key": key } : headers;
}

// FastAPI's `detail`: a sentence, or a list of parameter errors.
export function detailText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((error) => {
        const where = (error.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
        return where ? `${where}: ${error.msg}` : error.msg;
      })
      .join("; ");
  }
  return `the service answered ${status}`;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new ApiError(response.status, detailText(body, response.status));
}

// fetch() with the key; on a 401 the user is asked for a key and the request is sent again.
export async function send(path, options = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: withKey(options.headers) });
    } catch (error) {
      throw new ApiError(0, `the service cannot be reached (${error.message})`);
    }
    if (response.status !== 401) {
      if (!response.ok) throw await errorOf(response);
      return response;
    }
    const refusal = await errorOf(response);
    if ((await askForKey(refusal.message)) === null) throw refusal;
  }
}

export async function getJson(path) {
  return (await send(path)).json();
}

// POST a form (or nothing), for JSON.
export async function post(path, form) {
  return (await send(path, { method: "POST", body: form })).json();
}

export async function remove(path) {
  await send(path, { method: "DELETE" });
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// POST with upload progress: fetch() reports none. `onProgress` gets 0..1.
export function postWithProgress(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const request = new XMLHttpRequest();
      request.open("POST", path);
      const key = storedKey();
      if (key) request.setRequestHeader("X-API-Key", key);
      request.responseType = "json";
      request.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      };
      request.onerror = () => reject(new ApiError(0, "the upload failed: the service cannot be reached"));
      request.onload = async () => {
        const body = request.response;
        if (request.status === 401) {
          const detail = detailText(body, 401);
          if ((await askForKey(detail)) === null) reject(new ApiError(401, detail));
          else attempt();
        } else if (request.status >= 200 && request.status < 300) {
          resolve(body);
        } else {
          reject(new ApiError(request.status, detailText(body, request.status)));
        }
      };
      request.send(form);
    };
    attempt();
  });
}

// Images for <img>: a plain URL while the service needs no key (the browser caches thumbnails); with
// a key, which an element cannot send, fetched into a blob, kept for the page's other views of it.
const blobs = new Map();
export async function mediaUrl(path) {
  if (!storedKey()) return path;
  if (!blobs.has(path)) {
    const loading = send(path)
      .then((response) => response.blob())
      .then((blob) => URL.createObjectURL(blob));
    loading.catch(() => blobs.delete(path));
    blobs.set(path, loading);
  }
  return blobs.get(path);
}

export function forgetMedia() {
  for (const loading of blobs.values()) loading.then(URL.revokeObjectURL, () => {});
  blobs.clear();
}

// A video for <video>: a plain URL while the service needs no key (the browser streams and seeks it);
// with a key, the whole file fetched into a blob that is not kept (a video can be large): the player
// hands it back to releaseVideo() when it lets go of it.
export async function videoUrl(path) {
  if (!storedKey()) return path;
  const response = await send(path);
  return URL.createObjectURL(await response.blob());
}

export function releaseVideo(url) {
  if (url.startsWith("blob:")) URL.revokeObjectURL(url);
}
