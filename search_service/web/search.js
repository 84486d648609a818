// Search: a photo or clip (dropped, picked or pasted), or a stored face, against the library.

import { getJson, post, query } from "./api.js";
import { acceptDrops, apiImage, el, message, photoWithFaces, plural, seconds, timeChips } from "./views.js";

const THUMB_SIDE = 256;

// "name · collection", the name being the external id, else the file's name (the hit carries both).
function captionOf(hit, fallback) {
  return el("p", { class: "caption" }, `${hit.external_id || hit.filename || fallback} · ${hit.collection}`);
}

export function thumbnailPath(id) {
  return `/images/${id}/thumbnail?max_side=${THUMB_SIDE}`;
}

function controlsOf(form) {
  const data = new FormData(form);
  return {
    k: data.get("k"),
    threshold: data.get("threshold"),
    collection: data.get("collection"),
    source: data.get("source"),
  };
}

// A photo thumbnail with the hit's face outlined, placed by the photo's size that the hit carries.
function photoWithOneFace(hit, alt) {
  const img = apiImage(thumbnailPath(hit.id), alt);
  return el(
    "div",
    { class: "hit-photo" },
    photoWithFaces(img, hit.width, hit.height, [{ box: hit.box, title: "matched face" }]),
  );
}

// The cosine always; the normalised score too when it is what ranked and matched the hit.
function scoreLine(hit) {
  const cosineOnly = hit.normalized_score === null || hit.normalized_score === undefined;
  return el(
    "p",
    { class: "score" },
    el("span", { class: hit.match ? "badge match" : "badge no-match" }, hit.match ? "match" : "no match"),
    cosineOnly
      ? ` ${hit.score.toFixed(3)}`
      : ` ${hit.normalized_score.toFixed(2)} normalised · cosine ${hit.score.toFixed(3)}`,
  );
}

function imageHit(hit) {
  const name = hit.external_id || `photo ${hit.id}`;
  return el(
    "li",
    { class: hit.match ? "hit match" : "hit", "data-source": "image", "data-id": hit.id },
    photoWithOneFace(hit, `Photo ${name}, matched face outlined`),
    scoreLine(hit),
    captionOf(hit, name),
  );
}

function videoHit(hit) {
  const name = hit.external_id || `video ${hit.id}`;
  const title = hit.person === null || hit.person === undefined ? name : `${name}, person ${hit.person}`;
  const thumb = hit.thumbnail_url
    ? apiImage(hit.thumbnail_url, `Face of ${title} at ${seconds(hit.best_time ?? 0)}`, {
        class: "person-thumb",
      })
    : el("div", { class: "person-thumb none" }, "no thumbnail");
  return el(
    "li",
    { class: hit.match ? "hit video match" : "hit video", "data-source": "video", "data-id": hit.id },
    thumb,
    scoreLine(hit),
    captionOf(hit, name),
    timeChips(hit.id, hit.time_ranges || [], name, hit.best_time),
  );
}

function hitList(face) {
  if (face.hits.length === 0) return message("info", "No stored face is like this one.");
  return el(
    "ul",
    { class: "hits" },
    face.hits.map((hit) => (hit.source === "video" ? videoHit(hit) : imageHit(hit))),
  );
}

// A face of the query photo, cut out of it: shown beside its hits.
function faceCrop(img, box, label) {
  const [x1, y1, x2, y2] = box;
  const canvas = el("canvas", {
    width: 96,
    height: 96,
    class: "face-crop",
    role: "img",
    "aria-label": label,
  });
  const draw = () => {
    const side = Math.max(x2 - x1, y2 - y1);
    const cx = (x1 + x2) / 2;
    const cy = (y1 + y2) / 2;
    canvas.getContext("2d").drawImage(img, cx - side / 2, cy - side / 2, side, side, 0, 0, 96, 96);
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
  return canvas;
}

export function setUpSearch() {
  const form = document.getElementById("search-controls");
  const status = document.getElementById("search-status");
  const results = document.getElementById("search-results");
  const fileInput = document.getElementById("search-file");
  const drop = document.getElementById("search-drop");
  let current = null; // what is searched: {file} or {faceId}
  let sequence = 0; // answers to superseded searches are dropped
  let queryUrl = null;

  function showQueryPhoto(file, faces) {
    if (queryUrl) URL.revokeObjectURL(queryUrl);
    queryUrl = URL.createObjectURL(file);
    const img = el("img", {
      src: queryUrl,
      alt: `Query photo ${file.name}, ${plural(faces.length, "face", "faces")} outlined`,
    });
    const holder = el("div", { class: "query-photo" }, img);
    img.addEventListener(
      "load",
      () => {
        holder.replaceChildren(
          photoWithFaces(
            img,
            img.naturalWidth,
            img.naturalHeight,
            faces.map((face, index) => ({
              box: face.box,
              label: String(index + 1),
              title: `Show the hits of face ${index + 1}`,
              onClick: () =>
                document.getElementById(`query-face-${index + 1}`).scrollIntoView({ behavior: "smooth" }),
            })),
          ),
        );
      },
      { once: true },
    );
    return { holder, img };
  }

  function queryFaceHeading(face, index, img) {
    const label = `Face ${index + 1}`;
    const parts = [el("h3", {}, label)];
    if (face.thumbnail_url) {
      parts.unshift(
        el("img", {
          src: face.thumbnail_url,
          alt: `Person ${index + 1} of the query clip`,
          class: "face-crop",
        }),
      );
      if (face.time_ranges) {
        parts.push(
          el(
            "p",
            { class: "caption" },
            `in the clip at ${face.time_ranges.map(([s, e]) => `${seconds(s)}–${seconds(e)}`).join(", ")}`,
          ),
        );
      }
    } else if (img) {
      parts.unshift(faceCrop(img, face.box, `Face ${index + 1} of the query photo`));
    }
    return el("header", { class: "query-face-head" }, parts);
  }

  // Where a stored face came from (a search by face_id): its photo with the face, or the person.
  // The answer's `query` names it (file, size, collection); only a video's person needs a fetch.
  async function storedQuery(origin, box) {
    if (origin.source === "image") {
      const name = origin.external_id || origin.filename || `photo ${origin.id}`;
      const img = apiImage(thumbnailPath(origin.id), `Photo ${name}, the searched face outlined`);
      return el(
        "div",
        { class: "query-photo stored" },
        photoWithFaces(img, origin.width, origin.height, [{ box, label: "1", title: "the searched face" }]),
        el("p", { class: "caption" }, `Face from ${name} (${origin.collection})`),
      );
    }
    const video = await getJson(`/videos/${origin.id}`); // fresh: its people change as jobs finish
    const person = video.people.find((candidate) => candidate.face_id === origin.face_id);
    const name = origin.external_id || origin.filename || `video ${origin.id}`;
    return el(
      "div",
      { class: "query-photo stored" },
      person && person.thumbnail_url
        ? apiImage(person.thumbnail_url, `The searched person of ${name}`, { class: "person-thumb" })
        : null,
      el("p", { class: "caption" }, `Person from ${name} (${origin.collection})`),
    );
  }

  function showAnswer(answer, queryView) {
    const count = answer.faces.length;
    const what = answer.query ? "Searched with a stored face" : `${plural(count, "face", "faces")} found`;
    const threshold =
      answer.score_kind === "as_norm"
        ? `normalised match threshold ${answer.threshold.toFixed(2)}`
        : `match threshold ${answer.threshold.toFixed(3)}`;
    status.replaceChildren(message("info", `${what} · ${threshold}`));
    const groups = answer.faces.map((face, index) =>
      el(
        "section",
        { class: "query-face", id: `query-face-${index + 1}`, "aria-label": `Hits for face ${index + 1}` },
        queryFaceHeading(face, index, queryView.img),
        hitList(face),
      ),
    );
    results.replaceChildren(
      el("div", { class: "search-layout" }, queryView.holder, el("div", { class: "query-faces" }, groups)),
    );
  }

  async function run() {
    if (!current || !form.reportValidity()) return;
    const mine = ++sequence;
    const controls = controlsOf(form);
    let body; // none for a stored face: it goes in the query string
    if (current.file) {
      const isVideo = current.file.type.startsWith("video/");
      body = new FormData();
      body.append(isVideo ? "video" : "image", current.file, current.file.name);
      status.replaceChildren(message("busy", isVideo ? "Searching: analysing the clip…" : "Searching…"));
    } else {
      controls.face_id = current.faceId;
      status.replaceChildren(message("busy", "Searching with the stored face…"));
    }
    try {
      const answer = await post(`/search${query(controls)}`, body);
      if (mine !== sequence) return;
      let queryView;
      if (answer.query) {
        queryView = { holder: await storedQuery(answer.query, answer.faces[0].box), img: null };
      } else if (current.file.type.startsWith("video/")) {
        queryView = {
          holder: el(
            "div",
            { class: "query-photo" },
            el("p", { class: "caption" }, `Clip ${current.file.name}`),
          ),
          img: null,
        };
      } else {
        queryView = showQueryPhoto(current.file, answer.faces);
      }
      if (mine === sequence) showAnswer(answer, queryView);
    } catch (error) {
      if (mine !== sequence) return;
      // A photo the API refused (no face in it, say) is still shown, without outlines.
      const refused = current.file && current.file.type.startsWith("image/");
      results.replaceChildren(
        refused ? el("div", { class: "search-layout" }, showQueryPhoto(current.file, []).holder) : "",
      );
      status.replaceChildren(message("error", error.message));
    }
  }

  function searchFile(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && !file.type.startsWith("video/")) {
      status.replaceChildren(message("error", `${file.name} is neither a photo nor a video.`));
      return;
    }
    current = { file };
    run();
  }

  function searchFace(faceId) {
    current = { faceId };
    run();
  }

  fileInput.addEventListener("change", () => {
    searchFile(fileInput.files[0]);
    fileInput.value = "";
  });
  form.addEventListener("change", run);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  acceptDrops(drop, (files) => searchFile(files[0]));
  return {
    searchFile,
    searchFace,
    refresh: run,
    setCollections: (names) => fillCollections(form.elements.collection, names),
  };
}

function fillCollections(select, names) {
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "all"),
    ...names.map((name) => el("option", { value: name }, name)),
  );
  select.value = names.includes(chosen) ? chosen : "";
}
