// The page: three sections (tabs), the service's health, and the API key prompt.

import { forgetMedia, getJson, onKeyNeeded, storeKey, storedKey } from "./api.js";
import { setUpIngest } from "./ingest.js";
import { setUpLibrary } from "./library.js";
import { setUpSearch } from "./search.js";
import { el, plural, setUpPlayer } from "./views.js";

const SECTIONS = ["search", "library", "ingest"];
// The embedder may go down or come back while the page is open.
const HEALTH_REFRESH_MS = 30_000;

// The key dialog: resolves to the key entered, or null when dismissed (Escape, Cancel).
function promptForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  // The API's own words: "an API key is required: ...", or "unknown API key".
  dialog.querySelector(".key-reason").textContent = storedKey()
    ? `The key kept in this browser was refused: ${reason}.`
    : `${reason}.`;
  form.reset();
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = dialog.returnValue === "save" ? new FormData(form).get("key").trim() : "";
        if (!key) {
          resolve(null);
          return;
        }
        forgetMedia();
        storeKey(key);
        showKeyState();
        resolve(key);
      },
      { once: true },
    );
  });
}

function showKeyState() {
  document.getElementById("forget-key").hidden = !storedKey();
}

async function showHealth() {
  const box = document.getElementById("health");
  try {
    // Not send(): /healthz needs no key, and a 503 still carries the report.
    const health = await (await fetch("/healthz")).json();
    const model = health.embedder.model || "embedder unreachable";
    box.replaceChildren(
      el("span", { class: `dot ${health.status}`, "aria-hidden": "true" }),
      `${health.status} · model ${model} · index ${health.index.backend} (${plural(health.index.faces, "face", "faces")})`,
    );
    box.title = health.problems.join("\n");
  } catch {
    box.textContent = "The service cannot be reached.";
  }
}

function setUpTabs(onOpen) {
  const tabs = SECTIONS.map((name) => document.getElementById(`tab-${name}`));
  const show = (name, focus = false) => {
    SECTIONS.forEach((section, index) => {
      const selected = section === name;
      tabs[index].setAttribute("aria-selected", String(selected));
      tabs[index].tabIndex = selected ? 0 : -1;
      document.getElementById(section).hidden = !selected;
      if (selected && focus) tabs[index].focus();
    });
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    onOpen(name);
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => show(SECTIONS[index]));
    // The arrow keys move between tabs, as in every tab list.
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) show(SECTIONS[(index + step + SECTIONS.length) % SECTIONS.length], true);
    });
  });
  return show;
}

function start() {
  onKeyNeeded(promptForKey);
  setUpPlayer();
  showKeyState();
  document.getElementById("forget-key").addEventListener("click", () => {
    storeKey("");
    forgetMedia();
    showKeyState();
  });

  const search = setUpSearch();
  let show = () => {};
  const library = setUpLibrary({
    searchFace: (faceId) => {
      show("search");
      search.searchFace(faceId);
    },
    afterDelete: () => search.refresh(),
  });
  const refreshCollections = async () => {
    const names = await library.collections();
    search.setCollections(names);
    document
      .getElementById("collection-names")
      .replaceChildren(...names.map((name) => el("option", { value: name })));
  };
  const ingest = setUpIngest({
    changed: () => {
      showHealth();
      refreshCollections();
    },
  });
  show = setUpTabs((name) => {
    if (name === "library") library.open();
    if (name === "ingest") ingest.resume();
  });

  // A photo or clip pasted anywhere is searched.
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((item) => /^(image|video)\//.test(item.type));
    if (!file) return;
    event.preventDefault();
    show("search");
    search.searchFile(file);
  });

  const first = location.hash.slice(1);
  show(SECTIONS.includes(first) ? first : "search");
  showHealth();
  setInterval(showHealth, HEALTH_REFRESH_MS);
  refreshCollections();
}

start();
