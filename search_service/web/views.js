// Building blocks the three sections share: elements, photos with their faces outlined, time
// range chips, the video player and the delete confirmation.

import { mediaUrl, releaseVideo, storedKey, videoUrl } from "./api.js";

// An element with attributes (`on*` functions become listeners) and children (strings become text).
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

// A status line: "info", "error" or "busy" (role=status / alert, so screen readers hear it).
export function message(kind, text) {
  return el("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// "1 face", "2 faces".
export function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

export function seconds(value) {
  return `${value.toFixed(1)} s`;
}

// With a key, an <img> cannot send it: the bytes are fetched when the image nears the viewport.
const nearViewport = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      nearViewport.unobserve(entry.target);
      loadInto(entry.target, entry.target.dataset.path);
    }
  },
  { rootMargin: "400px" },
);

async function loadInto(img, path) {
  try {
    img.src = await mediaUrl(path);
  } catch {
    img.classList.add("broken");
  }
}

// An <img> of an API path, lazily loaded.
export function apiImage(path, alt, extra = {}) {
  const img = el("img", { alt, loading: "lazy", decoding: "async", ...extra });
  if (storedKey()) {
    img.dataset.path = path;
    nearViewport.observe(img);
  } else {
    img.src = path;
  }
  return img;
}

// A photo with its faces outlined, boxes in the photo's own pixels ([x1, y1, x2, y2] of a
// `width` x `height` photo); placed in percent, so they follow the photo's displayed size.
// `faces`: [{box, label, title, onClick}]; a face with onClick is a button.
export function photoWithFaces(img, width, height, faces) {
  const figure = el("div", { class: "photo" }, img);
  faces.forEach((face) => {
    const [x1, y1, x2, y2] = face.box;
    const outline = face.onClick
      ? el("button", {
          type: "button",
          class: "face",
          title: face.title,
          "aria-label": face.title,
          onclick: face.onClick,
        })
      : el("span", { class: "face", title: face.title });
    if (face.highlight) outline.classList.add("highlight");
    outline.style.left = `${(100 * x1) / width}%`;
    outline.style.top = `${(100 * y1) / height}%`;
    outline.style.width = `${(100 * (x2 - x1)) / width}%`;
    outline.style.height = `${(100 * (y2 - y1)) / height}%`;
    if (face.label) outline.append(el("span", { class: "face-label", "aria-hidden": "true" }, face.label));
    figure.append(outline);
  });
  return figure;
}

// The time ranges of a video person as chips; each plays the video from its start.
export function timeChips(videoId, ranges, title, bestTime) {
  const chips = el("div", { class: "chips" });
  for (const [start, end] of ranges) {
    chips.append(
      el(
        "button",
        {
          type: "button",
          class: "chip",
          "data-start": start,
          "aria-label": `Play ${title} from ${seconds(start)} to ${seconds(end)}`,
          onclick: () => playVideo(videoId, start, title),
        },
        `${seconds(start)}–${seconds(end)}`,
      ),
    );
  }
  if (bestTime !== null && bestTime !== undefined) {
    chips.append(
      el(
        "button",
        {
          type: "button",
          class: "chip best",
          "data-start": bestTime,
          "aria-label": `Play ${title} from its best moment, ${seconds(bestTime)}`,
          onclick: () => playVideo(videoId, bestTime, title),
        },
        `best ${seconds(bestTime)}`,
      ),
    );
  }
  return chips;
}

// The player lets go of its video, and of the blob that held it.
function unloadVideo(video) {
  if (video.src) releaseVideo(video.src);
  video.removeAttribute("src");
  video.load();
  delete video.dataset.path;
}

// Calls of playVideo: a video that finishes loading after a later call (or the close) is dropped.
let playing = 0;

// The page's one video player, in a dialog: plays a stored video from a second.
export async function playVideo(videoId, start, title) {
  const mine = ++playing;
  const dialog = document.getElementById("player");
  const video = dialog.querySelector("video");
  const status = dialog.querySelector(".player-status");
  dialog.querySelector("h2").textContent = `${title}, from ${seconds(start)}`;
  status.textContent = "";
  if (!dialog.open) dialog.showModal();
  const seek = () => {
    video.currentTime = start;
    video.play().catch(() => {
      // Autoplay refused: the controls are there to press play.
    });
  };
  const path = `/videos/${videoId}/file`;
  if (video.dataset.path === path && video.readyState >= HTMLMediaElement.HAVE_METADATA) {
    seek();
    return;
  }
  let source;
  try {
    source = await videoUrl(path);
  } catch (error) {
    if (mine === playing) status.textContent = error.message;
    return;
  }
  if (mine !== playing || !dialog.open) {
    releaseVideo(source);
    return;
  }
  unloadVideo(video);
  video.dataset.path = path;
  video.addEventListener("loadedmetadata", seek, { once: true });
  video.src = source;
}

export function setUpPlayer() {
  const dialog = document.getElementById("player");
  const video = dialog.querySelector("video");
  dialog.addEventListener("close", () => {
    playing += 1; // a video still loading is not wanted any more
    video.pause();
    unloadVideo(video);
  });
  video.addEventListener("error", () => {
    dialog.querySelector(".player-status").textContent = "This video cannot be played in the browser.";
  });
}

// A yes/no question in the confirmation dialog; resolves to true for yes.
export function confirmAction(question, action) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector(".confirm-question").textContent = question;
  dialog.querySelector(".confirm-yes").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

// Files dropped on `zone` go to `handle`.
export function acceptDrops(zone, handle) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) handle([...event.dataTransfer.files]);
  });
}
