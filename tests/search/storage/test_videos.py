"""Videos in storage: upload and its job, an analysis stored at once with its job's "done", and
deletion leaving no rows (as every public read sees it) and no files."""

from __future__ import annotations

from search_service.domain import SubmittedVideo, VideoRecord
from search_service.storage import Storage
from tests.search.storage.records import face_count, staged_video, stored_files, video_analysis


def assert_video_gone(storage: Storage, video: VideoRecord, face_ids: list[int]) -> None:
    """Nothing of the video is left, as every public read sees it, and none of its files."""
    assert storage.videos.get(video.id) is None
    assert storage.videos.find() == []
    assert video.job is not None and storage.jobs.get(video.job.id) is None
    assert storage.jobs.counts() == {}
    assert storage.faces.describe(face_ids) == {}
    assert storage.faces.person_vectors([(video.id, person.index) for person in video.people]) == {}
    assert all(
        storage.videos.thumbnail(video.id, track.id) is None
        for person in video.people
        for track in person.tracks
    )
    assert face_count(storage) == 0
    assert storage.faces.collections() == []
    assert stored_files(storage.data_dir) == []


def test_an_upload_is_stored_with_a_queued_job(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"video bytes"), "main", "cam/clip.mp4")
    assert not submitted.duplicate
    video = storage.videos.get(submitted.video_id)
    assert video is not None and video.job is not None
    assert (video.collection, video.external_id, video.filename, video.size_bytes) == (
        "main",
        "cam/clip.mp4",
        "clip.mp4",
        11,
    )
    assert (video.duration, video.width, video.people) == (None, None, [])  # known once analysed
    assert (video.job.id, video.job.state, video.job.attempts) == (submitted.job_id, "queued", 0)
    assert storage.videos.file(video).read_bytes() == b"video bytes"
    assert storage.videos.find(external_id="cam/clip.mp4") == [video]
    assert storage.images.get(video.id) is None  # a video is no photo
    # The staging file became the stored file: nothing temporary is left.
    assert [path.name for path in stored_files(storage.data_dir)] == [video.sha256]


def test_the_same_upload_again_is_the_same_video_and_retries_only_a_failed_job(storage: Storage) -> None:
    first = storage.videos.add(staged_video(storage, b"clip"), "main", None)
    again = storage.videos.add(staged_video(storage, b"clip"), "main", None)
    assert again == SubmittedVideo(first.video_id, first.job_id, duplicate=True)  # its job still waits
    elsewhere = storage.videos.add(staged_video(storage, b"clip"), "other", None)
    assert not elsewhere.duplicate and elsewhere.video_id != first.video_id
    assert len(stored_files(storage.data_dir)) == 1  # one file for both collections

    job = storage.jobs.claim()
    assert job is not None and job.id == first.job_id
    assert storage.jobs.set_state(job.id, "failed", only_from=("running",), error="bad") is not None
    retry = storage.videos.add(staged_video(storage, b"clip"), "main", None)
    assert retry.duplicate and retry.video_id == first.video_id and retry.job_id != first.job_id
    video = storage.videos.get(first.video_id)
    assert video is not None and video.job is not None
    assert (video.job.id, video.job.state) == (retry.job_id, "queued")  # the latest job


def test_a_finished_job_stores_people_tracks_and_vectors_at_once(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"video bytes"), "main", "clip.mp4")
    job = storage.jobs.claim()
    assert job is not None and (job.id, job.state, job.attempts) == (submitted.job_id, "running", 1)
    faces = storage.videos.store_analysis(job, video_analysis(), {"total": 0.4})
    assert faces is not None and len(faces) == 4 and set(faces.sources) == {"video"}
    assert set(faces.media_ids) == {submitted.video_id}

    video = storage.videos.get(submitted.video_id)
    assert video is not None and video.job is not None
    assert (video.duration, video.fps, video.width, video.height) == (12.5, 25.0, 640, 360)
    assert (video.job.state, video.job.progress, video.job.timings) == ("done", 1.0, {"total": 0.4})
    assert (video.job.frames_processed, video.job.faces_found) == (25, 9)
    assert video.job.finished_at is not None
    assert [person.time_ranges for person in video.people] == [[(1.0, 2.5), (6.0, 8.0)], [(3.0, 4.0)]]
    assert [[(t.start, t.end) for t in person.tracks] for person in video.people] == [
        [(1.0, 2.5), (6.0, 8.0)],
        [(3.0, 4.0)],
    ]
    first_track = video.people[0].tracks[0]
    assert video.people[0].thumbnail_track in {track.id for track in video.people[0].tracks}
    thumbnail = storage.videos.thumbnail(video.id, first_track.id)
    assert thumbnail is not None and thumbnail.read_bytes() == b"jpeg\x00"
    assert storage.videos.thumbnail(video.id, 999_999) is None

    late_face = int(faces.face_ids[2])  # the one vector of the 6-8 s track
    hit = storage.faces.describe([late_face])[late_face]
    assert (hit.source, hit.media_id, hit.external_id, hit.person) == ("video", video.id, "clip.mp4", 0)
    assert hit.time_ranges == [(1.0, 2.5), (6.0, 8.0)] and hit.time_s == 6.0
    vectors = storage.faces.person_vectors([(video.id, 0)])[(video.id, 0)]
    assert list(vectors.track_starts) == [1.0, 1.0, 6.0] and vectors.vectors.shape == (3, 128)
    assert face_count(storage) == 4
    assert storage.faces.collections()[0].faces == 4
    assert len(stored_files(storage.data_dir)) == 4  # the video and three thumbnails

    assert storage.videos.delete(video.id)
    assert_video_gone(storage, video, [int(face_id) for face_id in faces.face_ids])
    assert not storage.videos.delete(video.id)


def test_a_cancelled_job_cannot_store_its_result(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"video bytes"), "main", None)
    job = storage.jobs.claim()
    assert job is not None
    assert storage.jobs.set_state(job.id, "cancelled", only_from=("queued", "running")) is not None
    assert storage.videos.store_analysis(job, video_analysis(), {}) is None

    video = storage.videos.get(submitted.video_id)
    assert video is not None and video.job is not None
    assert (video.job.state, video.people, video.duration) == ("cancelled", [], None)
    assert face_count(storage) == 0
    assert storage.faces.collections()[0].faces == 0
    assert len(stored_files(storage.data_dir)) == 1  # the video; no thumbnail left behind


def test_a_video_deleted_while_its_job_runs_gains_nothing(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"video bytes"), "main", None)
    job = storage.jobs.claim()
    assert job is not None
    video = storage.videos.get(submitted.video_id)
    assert video is not None and storage.videos.delete(video.id)
    assert storage.videos.store_analysis(job, video_analysis(), {}) is None
    assert_video_gone(storage, video, [])


def test_a_thumbnail_shared_with_another_video_outlives_one_of_them(storage: Storage) -> None:
    ids = []
    for collection in ("one", "two"):
        storage.videos.add(staged_video(storage, b"same clip"), collection, None)
        job = storage.jobs.claim()
        assert job is not None and storage.videos.store_analysis(job, video_analysis(), {}) is not None
        ids.append(job.video_id)
    assert len(stored_files(storage.data_dir)) == 4  # one video file and three thumbnails, shared
    assert storage.videos.delete(ids[0])
    kept = storage.videos.get(ids[1])
    assert kept is not None
    track = kept.people[0].tracks[0]
    thumbnail = storage.videos.thumbnail(kept.id, track.id)
    assert thumbnail is not None and thumbnail.exists()
    assert storage.videos.file(kept).read_bytes() == b"same clip"
