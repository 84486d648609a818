"""GET /jobs: every video job, by state and collection, paged like the other listings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.search.api.helpers import FAMILY_KEY, WRITE_KEY, finished, upload_video
from tests.search.fakes import FakeEmbedder
from tests.search.video.conftest import write_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Three different files of nobody (each a job of a sample or two)."""
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_clip(folder / f"blank{n}.mp4", {}, lambda _: [], seconds).read_bytes()
        for n, seconds in enumerate([0.5, 0.6, 0.7])
    ]


def jobs(client: TestClient, **params: str | int) -> dict[str, object]:
    answer = client.get("/jobs", params=params)
    assert answer.status_code == 200, answer.text
    listed: dict[str, object] = answer.json()
    return listed


def ids(listing: dict[str, object]) -> list[int]:
    entries = listing["jobs"]
    assert isinstance(entries, list)
    return [entry["id"] for entry in entries]


def test_jobs_by_state_and_collection(
    client: TestClient, fake_embedder: FakeEmbedder, clips: list[bytes]
) -> None:
    done = finished(client, upload_video(client, clips[0])["job_id"])
    elsewhere = finished(client, upload_video(client, clips[1], collection="other")["job_id"])
    fake_embedder.failing = True
    failed = finished(client, upload_video(client, clips[2])["job_id"])
    assert (done["state"], elsewhere["state"], failed["state"]) == ("done", "done", "failed")

    everything = jobs(client)
    assert everything == {"jobs": [done, elsewhere, failed], "next_after": None}  # as GET /jobs/{id} shows
    assert ids(jobs(client, state="done")) == [done["id"], elsewhere["id"]]
    assert ids(jobs(client, state="failed")) == [failed["id"]]
    assert ids(jobs(client, state="running")) == []
    assert ids(jobs(client, collection="other")) == [elsewhere["id"]]
    assert ids(jobs(client, collection="default", state="done")) == [done["id"]]


def test_paging_by_after(client: TestClient, clips: list[bytes]) -> None:
    job_ids = [finished(client, upload_video(client, clip)["job_id"])["id"] for clip in clips]
    first = jobs(client, limit=2)
    assert ids(first) == job_ids[:2] and first["next_after"] == job_ids[1]
    last = jobs(client, limit=2, after=job_ids[1])
    assert ids(last) == job_ids[2:] and last["next_after"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"state": "finished"},
        {"state": ""},
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"collection": "a b"},
    ],
)
def test_bad_parameters_are_a_422(client: TestClient, params: dict[str, str | int]) -> None:
    answer = client.get("/jobs", params=params)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))]


def test_a_key_limited_to_a_collection_lists_only_its_jobs(keyed: TestClient, clips: list[bytes]) -> None:
    write = {"X-API-Key": WRITE_KEY}
    family = {"X-API-Key": FAMILY_KEY}
    for clip, collection in zip(clips, ["family", "work"], strict=False):
        answer = keyed.post(
            "/videos",
            files={"video": ("c.mp4", clip, "video/mp4")},
            data={"collection": collection},
            headers=write,
        )
        assert answer.status_code == 202, answer.text
    [job_family, job_work] = [job["id"] for job in keyed.get("/jobs", headers=write).json()["jobs"]]
    assert keyed.get("/jobs").status_code == 401
    assert [job["id"] for job in keyed.get("/jobs", headers=family).json()["jobs"]] == [job_family]
    assert keyed.get("/jobs", params={"collection": "work"}, headers=family).status_code == 403
    assert [
        job["id"] for job in keyed.get("/jobs", params={"collection": "work"}, headers=write).json()["jobs"]
    ] == [job_work]
