"""Search by video clip end to end: the real embedder, real photos and clips (../shared/data,
VIDEOS.tsv). A cut of the Hamilton clip finds Lin-Manuel Miranda's photo; the Obama dinner clip
finds his photos and the other Obama clip, ahead of the crowd clip. Both the query's people and
the video hits come with their time ranges.

About 9 s of video ingested and 7 s searched with: a few seconds of wall time on 2 cores.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest

from tests.e2e.conftest import ingest_clips, running_search_service
from tools.processes import ServiceProcess

pytestmark = pytest.mark.shared_data

STORED_CLIPS = ("obama_whcd_globalnews.mp4", "crowd_royal_opera_house.mp4")
# Folders of other_sets/face_recognition: Miranda's one photo among other people's.
PHOTO_FOLDERS = ("lin_manuel_miranda", "barack_obama", "joe_biden", "kit_harington", "rose_leslie")
MIRANDA = "lin_manuel_miranda/lin-manuel-miranda.png"
# Obama's stills showing his whole face (obama_partial_face*.jpg crop it to a sliver and match
# passers-by as well as him: see test_video_search).
OBAMA_FULL_FACE = ("obama.jpg", "obama-480p.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_small.jpg")
JOB_TIMEOUT_S = 120
CUT_SECONDS = 4.0


def cut_clip(source: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source`` (by its timestamps) as a new H.264 clip starting at 0."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = reader.streams.video[0]
        encoder = writer.add_stream("libx264", rate=stream.average_rate)
        encoder.width, encoder.height, encoder.pix_fmt = stream.width, stream.height, "yuv420p"
        encoder.time_base = stream.time_base
        encoder.options = {"crf": "20", "preset": "veryfast"}
        first: int | None = None
        for frame in reader.decode(stream):
            assert frame.pts is not None and frame.time is not None
            if frame.time >= seconds:
                break
            first = frame.pts if first is None else first
            picture = frame.reformat(format="yuv420p")
            picture.pts, picture.time_base = frame.pts - first, frame.time_base
            for packet in encoder.encode(picture):
                writer.mux(packet)
        for packet in encoder.encode():
            writer.mux(packet)
    return target


@pytest.fixture(scope="module")
def service(
    embedder: ServiceProcess, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, Path]]:
    """A search service holding the photos and the two stored clips (jobs done); its data dir."""
    data_dir = tmp_path_factory.mktemp("clip_e2e")
    with running_search_service(data_dir, embedder) as search:
        faces = shared_data / "other_sets" / "face_recognition"
        photos = [path for folder in PHOTO_FOLDERS for path in sorted((faces / folder).iterdir())]
        response = httpx.post(
            f"{search.url}/images",
            files=[("image", (path.name, path.read_bytes())) for path in photos],
            data={"external_id": [f"{path.parent.name}/{path.name}" for path in photos]},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        ingest_clips(search, shared_data / "videos", STORED_CLIPS, JOB_TIMEOUT_S)
        yield search, data_dir


def search_clip(search: ServiceProcess, path: Path) -> dict[str, Any]:
    response = httpx.post(
        f"{search.url}/search", files={"video": (path.name, path.read_bytes())}, params={"k": 50}, timeout=120
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def check_query_face(face: dict[str, Any], duration: float) -> None:
    """The person's ranges lie in the query clip, and the thumbnail is their face at best_time."""
    ranges = face["time_ranges"]
    assert ranges and all(0 <= start < end <= duration + 0.01 for start, end in ranges), ranges
    assert any(start <= face["best_time"] <= end for start, end in ranges)
    prefix = "data:image/jpeg;base64,"
    assert face["thumbnail_url"].startswith(prefix)
    jpeg = base64.b64decode(face["thumbnail_url"][len(prefix) :])
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None


def test_a_cut_of_the_hamilton_clip_finds_mirandas_photo(
    service: tuple[ServiceProcess, Path], shared_data: Path, tmp_path: Path
) -> None:
    search, data_dir = service
    clip = cut_clip(
        shared_data / "videos" / "hamilton_short_clip.mp4", tmp_path / "hamilton_cut.mp4", CUT_SECONDS
    )
    result = search_clip(search, clip)
    assert result["faces"], result
    for face in result["faces"]:
        check_query_face(face, CUT_SECONDS)
    # He is on stage in a wide shot then: the people of the clip who match his photo have it first.
    finders = [face for face in result["faces"] if face["hits"][0]["external_id"] == MIRANDA]
    assert finders and all(face["hits"][0]["match"] for face in finders)
    assert all(
        hit["external_id"] != MIRANDA or not hit["match"]
        for face in result["faces"]
        if face not in finders
        for hit in face["hits"]
    )
    assert list((data_dir / "media" / "tmp").iterdir()) == []  # the staged clip is gone


def test_the_obama_clip_finds_his_photos_and_clip_ahead_of_the_crowd(
    service: tuple[ServiceProcess, Path], shared_data: Path
) -> None:
    search, data_dir = service
    result = search_clip(search, shared_data / "videos" / "obama_whcd_slacker.mp4")
    [face] = result["faces"]  # Obama alone, on screen all along (VIDEOS.tsv)
    check_query_face(face, 4.07)
    assert sum(end - start for start, end in face["time_ranges"]) >= 3.5

    matches = {hit["external_id"]: hit for hit in face["hits"] if hit["match"]}
    obama_photos = {
        f"barack_obama/{path.name}"
        for path in (shared_data / "other_sets" / "face_recognition" / "barack_obama").iterdir()
    }
    assert obama_photos <= set(matches)
    assert not any(
        name.startswith(("lin_manuel", "joe_biden", "kit_harington", "rose_leslie")) for name in matches
    )
    [clip] = [hit for hit in face["hits"] if hit["external_id"] == "obama_whcd_globalnews.mp4"]
    assert clip["match"] and clip["source"] == "video"
    assert sum(end - start for start, end in clip["time_ranges"]) >= 0.9 * 5.1  # he is on all along
    assert len(clip["range_scores"]) == len(clip["time_ranges"]) and clip["best_time"] is not None
    # The other Obama clip and his whole-face photos all rank above anything of the crowd clip.
    # (A passer-by there scores about 0.92 against him: video faces of different people come as
    # close as that; see docs/decisions/search.md.)
    ranked = [hit["external_id"] for hit in face["hits"]]
    crowd = [rank for rank, name in enumerate(ranked) if name == "crowd_royal_opera_house.mp4"]
    obama = [
        ranked.index(name)
        for name in ("obama_whcd_globalnews.mp4", *(f"barack_obama/{n}" for n in OBAMA_FULL_FACE))
    ]
    assert max(obama) < min(crowd, default=len(ranked)), ranked
    assert ranked[0] == "obama_whcd_globalnews.mp4"
    assert list((data_dir / "media" / "tmp").iterdir()) == []
