// Ingest: many photos at once (one request each, a few at a time, with upload progress), and
// videos, whose analysis jobs are followed until they end.

import { getJson, postWithProgress, query, remove } from "./api.js";
import { acceptDrops, el, message, plural } from "./views.js";

// Uploads in flight at once: enough to keep the embedder busy, few enough to show steady progress.
const CONCURRENT_UPLOADS = 3;
const JOB_POLL_MS = 1000;
const ACTIVE_STATES = ["queued", "running"];

function collectionOf(form) {
  return new FormData(form).get("collection") || null;
}

function uploadForm(field, file, collection) {
  const form = new FormData();
  form.append(field, file, file.name);
  if (collection) form.append("collection", collection);
  return form;
}

export function setUpIngest({ changed }) {
  const photoForm = document.getElementById("photo-upload");
  const photoInput = document.getElementById("photo-files");
  const photoList = document.getElementById("photo-progress");
  const photoSummary = document.getElementById("photo-summary");
  const videoForm = document.getElementById("video-upload");
  const videoInput = document.getElementById("video-file");
  const jobsBox = document.getElementById("video-jobs");
  const followed = new Set();

  async function uploadPhotos(files) {
    if (!photoForm.reportValidity()) return;
    const collection = collectionOf(photoForm);
    const totals = { stored: 0, faces: 0, duplicates: 0, failed: 0, noFace: 0 };
    const summarise = (done) => {
      const parts = [
        `${plural(totals.stored, "photo", "photos")} stored with ${plural(totals.faces, "face", "faces")}`,
        `${plural(totals.duplicates, "duplicate", "duplicates")}`,
        `${totals.failed} failed`,
      ];
      if (totals.noFace) parts.push(`${plural(totals.noFace, "photo", "photos")} without a face`);
      const head = done ? `Done: ${files.length} uploaded.` : `Uploading ${files.length}…`;
      photoSummary.replaceChildren(message(totals.failed ? "error" : "info", `${head} ${parts.join(" · ")}`));
    };
    const rows = files.map((file) => {
      const bar = el("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
      const outcome = el("span", { class: "outcome" }, "waiting");
      const row = el("li", { class: "upload-row" }, el("span", { class: "name" }, file.name), bar, outcome);
      return { file, bar, outcome, row };
    });
    photoList.replaceChildren(...rows.map((entry) => entry.row));
    summarise(false);

    async function upload({ file, bar, outcome, row }) {
      outcome.textContent = "uploading";
      try {
        const answer = await postWithProgress("/images", uploadForm("image", file, collection), (part) => {
          bar.value = part;
        });
        const image = answer.images[0];
        if (image.error) throw new Error(image.error.detail);
        bar.value = 1;
        if (image.duplicate) {
          totals.duplicates += 1;
          outcome.textContent = `duplicate of photo ${image.id}`;
          row.classList.add("duplicate");
        } else {
          totals.stored += 1;
          totals.faces += image.faces.length;
          if (!image.faces.length) totals.noFace += 1;
          outcome.textContent = `stored, ${plural(image.faces.length, "face", "faces")}`;
          row.classList.add("stored");
        }
      } catch (error) {
        totals.failed += 1;
        outcome.textContent = error.message;
        row.classList.add("failed");
      }
      summarise(false);
    }

    const queue = [...rows];
    const worker = async () => {
      while (queue.length) await upload(queue.shift());
    };
    await Promise.all(Array.from({ length: CONCURRENT_UPLOADS }, worker));
    summarise(true);
    changed();
  }

  // A job's card, refreshed until the job ends.
  function follow(jobId, videoId, title) {
    if (followed.has(jobId)) return;
    followed.add(jobId);
    const bar = el("progress", { max: 1, value: 0, "aria-label": `Analysis of ${title}` });
    const counts = el("span", { class: "counts" });
    const state = el("div", { class: "job-state", role: "status" }, "queued");
    const cancel = el("button", { type: "button", class: "danger" }, "Cancel");
    const card = el(
      "div",
      { class: "job", "data-job": jobId },
      el("h3", {}, title),
      bar,
      counts,
      state,
      cancel,
    );
    jobsBox.prepend(card);

    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await remove(`/jobs/${jobId}`);
      } catch (error) {
        state.replaceChildren(message("error", `Not cancelled: ${error.message}`));
        cancel.disabled = false;
      }
    });

    const poll = async () => {
      let job;
      try {
        job = await getJson(`/jobs/${jobId}`);
      } catch (error) {
        state.replaceChildren(message("error", error.message));
        cancel.remove();
        return;
      }
      bar.value = job.progress;
      counts.textContent = `${plural(job.frames_processed, "frame", "frames")} analysed · ${plural(job.faces_found, "face", "faces")} found`;
      card.dataset.state = job.state;
      if (ACTIVE_STATES.includes(job.state)) {
        state.textContent =
          job.state === "queued" ? "Waiting for a worker…" : `Analysing: ${Math.round(job.progress * 100)}%`;
        setTimeout(poll, JOB_POLL_MS);
        return;
      }
      cancel.remove();
      if (job.state === "done") {
        const video = await getJson(`/videos/${videoId}`).catch(() => null);
        const people = video ? `: ${plural(video.people.length, "person", "people")} found` : "";
        state.replaceChildren(message("info", `Done${people}. See the video in the Library.`));
        changed();
      } else if (job.state === "failed") {
        state.replaceChildren(message("error", `The analysis failed: ${job.error || "no reason given"}`));
      } else {
        state.replaceChildren(message("info", "Cancelled: nothing of this video is searchable."));
      }
    };
    poll();
  }

  async function uploadVideo(file) {
    if (!file || !videoForm.reportValidity()) return;
    const bar = el("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = el("div", { role: "status" }, `Uploading ${file.name}…`);
    const card = el("div", { class: "job" }, el("h3", {}, file.name), bar, status);
    jobsBox.prepend(card);
    try {
      const accepted = await postWithProgress(
        "/videos",
        uploadForm("video", file, collectionOf(videoForm)),
        (part) => {
          bar.value = part;
        },
      );
      card.remove();
      follow(
        accepted.job_id,
        accepted.video_id,
        accepted.duplicate ? `${file.name} (already stored)` : file.name,
      );
    } catch (error) {
      status.replaceChildren(message("error", `${file.name} was not accepted: ${error.message}`));
    }
  }

  // Jobs still running from before this page was opened (another tab, the ingest CLI).
  async function resume() {
    for (const state of ACTIVE_STATES) {
      try {
        const { jobs } = await getJson(`/jobs${query({ state, limit: 100 })}`);
        for (const job of jobs) follow(job.id, job.video_id, `video ${job.video_id}`);
      } catch {
        // Not fatal: the page follows the jobs it starts itself either way.
      }
    }
  }

  photoInput.addEventListener("change", () => {
    uploadPhotos([...photoInput.files]);
    photoInput.value = "";
  });
  videoInput.addEventListener("change", () => {
    uploadVideo(videoInput.files[0]);
    videoInput.value = "";
  });
  acceptDrops(document.getElementById("photo-drop"), (files) =>
    uploadPhotos(files.filter((file) => file.type.startsWith("image/"))),
  );
  acceptDrops(document.getElementById("video-drop"), (files) => uploadVideo(files[0]));
  for (const form of [photoForm, videoForm])
    form.addEventListener("submit", (event) => event.preventDefault());
  return { resume };
}
