// Library: collections with their counts, photos and videos page by page, delete, search by a face.

import { getJson, query, remove } from "./api.js";
import { thumbnailPath } from "./search.js";
import { apiImage, confirmAction, el, message, photoWithFaces, plural, seconds, timeChips } from "./views.js";

const PHOTOS_PER_PAGE = 48;
const VIDEOS_PER_PAGE = 10;

// Pages of a listing that pages forward by `after`: the cursors seen so far allow going back.
class Pager {
  constructor(prefix, perPage, load) {
    this.perPage = perPage;
    this.load = load;
    this.cursors = [0];
    this.next = null;
    this.bar = document.getElementById(`${prefix}-prev`).parentElement;
    this.prevButton = document.getElementById(`${prefix}-prev`);
    this.nextButton = document.getElementById(`${prefix}-next`);
    this.label = document.getElementById(`${prefix}-page`);
    this.prevButton.addEventListener("click", () => {
      this.cursors.pop();
      this.show();
    });
    this.nextButton.addEventListener("click", () => {
      this.cursors.push(this.next);
      this.show();
    });
  }

  reset() {
    this.cursors = [0];
    return this.show();
  }

  async show() {
    const after = this.cursors[this.cursors.length - 1];
    this.next = await this.load(after, this.perPage);
    this.prevButton.disabled = this.cursors.length === 1;
    this.nextButton.disabled = this.next === null;
    this.label.textContent = `page ${this.cursors.length}`;
    this.bar.hidden = this.prevButton.disabled && this.nextButton.disabled;
  }
}

export function setUpLibrary({ searchFace, afterDelete }) {
  const collectionsBox = document.getElementById("collections");
  const photosBox = document.getElementById("photos");
  const photosStatus = document.getElementById("photos-status");
  const videosBox = document.getElementById("videos");
  const videosStatus = document.getElementById("videos-status");
  let collection = "";

  async function deleteItem(kind, id, name) {
    const what = kind === "images" ? "photo" : "video";
    const yes = await confirmAction(
      `Delete the ${what} ${name}? Its faces leave the search index; this cannot be undone.`,
      `Delete ${what}`,
    );
    if (!yes) return;
    const status = kind === "images" ? photosStatus : videosStatus;
    try {
      await remove(`/${kind}/${id}`);
      status.replaceChildren(message("info", `Deleted the ${what} ${name}.`));
    } catch (error) {
      status.replaceChildren(message("error", `The ${what} ${name} was not deleted: ${error.message}`));
      return;
    }
    await refresh();
    afterDelete();
  }

  function photoTile(image) {
    const name = image.external_id || image.filename || `photo ${image.id}`;
    const count = image.faces.length;
    const img = apiImage(thumbnailPath(image.id), `${name}: ${plural(count, "face", "faces")} outlined`);
    const faces = image.faces.map((face, index) => ({
      box: face.box,
      title: `Search with face ${index + 1} of ${name}`,
      onClick: () => searchFace(face.id),
    }));
    return el(
      "li",
      { class: "tile", "data-id": image.id },
      photoWithFaces(img, image.width, image.height, faces),
      el("p", { class: "caption", title: name }, name),
      el(
        "div",
        { class: "tile-actions" },
        count === 1
          ? el("button", { type: "button", onclick: () => searchFace(image.faces[0].id) }, "Search")
          : el("span", { class: "hint" }, count ? "choose a face to search" : "no face"),
        deleteButton("images", image.id, name),
      ),
    );
  }

  function deleteButton(kind, id, name) {
    return el(
      "button",
      { type: "button", class: "danger", "aria-label": `Delete ${name}`, onclick: () => deleteItem(kind, id, name) },
      "Delete",
    );
  }

  function personCard(video, person, name) {
    const title = `${name}, person ${person.index}`;
    return el(
      "li",
      { class: "person" },
      el(
        "button",
        {
          type: "button",
          class: "person-button",
          title: `Search with ${title}`,
          onclick: () => searchFace(person.face_id),
        },
        person.thumbnail_url
          ? apiImage(person.thumbnail_url, `Search with ${title}`, { class: "person-thumb" })
          : el("span", { class: "person-thumb none" }, `Search with person ${person.index}`),
      ),
      timeChips(video.id, person.time_ranges, name),
    );
  }

  function videoCard(video) {
    const name = video.external_id || video.filename || `video ${video.id}`;
    let body;
    if (video.state === "done") {
      const duration = video.duration === null ? "" : `${seconds(video.duration)}, `;
      body = [
        el("p", { class: "caption" }, `${duration}${plural(video.people.length, "person", "people")}`),
        el(
          "ul",
          { class: "people" },
          video.people.map((person) => personCard(video, person, name)),
        ),
      ];
    } else if (video.state === "failed") {
      body = [message("error", `The analysis failed: ${video.error || "no reason given"}`)];
    } else {
      body = [message("info", `Analysis ${video.state || "not started"}.`)];
    }
    return el(
      "li",
      { class: "video-card", "data-id": video.id },
      el(
        "header",
        {},
        el("h3", {}, name),
        el("span", { class: "hint" }, video.collection),
        deleteButton("videos", video.id, name),
      ),
      body,
    );
  }

  // A page of a listing into `box`; its own messages in `status` replace the last page's, and
  // leave the others (what a delete did) where they are.
  async function listInto(box, status, path, render, empty) {
    const say = (kind, text) => status.append(Object.assign(message(kind, text), { listing: true }));
    const sayNothing = () =>
      [...status.children].filter((child) => child.listing).forEach((child) => child.remove());
    try {
      const page = await getJson(path);
      const items = page.images || page.videos;
      sayNothing();
      box.replaceChildren(...items.map(render));
      if (!items.length) say("info", empty);
      return page.next_after;
    } catch (error) {
      sayNothing();
      box.replaceChildren();
      say("error", error.message);
      return null;
    }
  }

  const photos = new Pager("photos", PHOTOS_PER_PAGE, (after, limit) =>
    listInto(
      photosBox,
      photosStatus,
      `/images${query({ collection, after, limit })}`,
      photoTile,
      "No photos yet: add some under Ingest.",
    ),
  );
  const videos = new Pager("videos", VIDEOS_PER_PAGE, (after, limit) =>
    listInto(
      videosBox,
      videosStatus,
      `/videos${query({ collection, after, limit })}`,
      videoCard,
      "No videos yet.",
    ),
  );

  async function showCollections() {
    try {
      const { collections } = await getJson("/collections");
      const button = (name, label) =>
        el(
          "button",
          {
            type: "button",
            class: "collection",
            "aria-pressed": String(collection === name),
            onclick: () => choose(name),
          },
          label,
        );
      collectionsBox.replaceChildren(
        button("", "All collections"),
        ...collections.map((c) =>
          button(
            c.name,
            `${c.name}: ${plural(c.images, "photo", "photos")}, ${plural(c.videos, "video", "videos")}, ${plural(c.faces, "face", "faces")}`,
          ),
        ),
      );
      return collections.map((c) => c.name);
    } catch (error) {
      collectionsBox.replaceChildren(message("error", error.message));
      return [];
    }
  }

  function choose(name) {
    collection = name;
    photosStatus.replaceChildren();
    videosStatus.replaceChildren();
    showCollections();
    photos.reset();
    videos.reset();
  }

  // The current pages again (after a delete or an upload).
  async function refresh() {
    await Promise.all([showCollections(), photos.show(), videos.show()]);
  }

  return {
    open: () => Promise.all([showCollections(), photos.reset(), videos.reset()]),
    refresh,
    collections: showCollections,
  };
}
