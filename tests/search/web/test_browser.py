"""The web page in headless Chromium against the real services (real models, real photos and clips
from ../shared/data): search, ingest, playing a time range, delete, paging, and the API key prompt.

Every step saves a screenshot to reports/ui/. One search service serves the module, with a small
gallery ingested through the API; each test adds what it needs of its own, so they run in any order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.e2e.conftest import ingest_clips, running_search_service
from tests.search.web.conftest import screenshot
from tools.processes import ServiceProcess, search_service

GALLERY = [
    "other_sets/face_recognition/barack_obama/obama.jpg",
    "other_sets/face_recognition/joe_biden/biden.jpg",
    "other_sets/face_recognition/kit_harington/john1.jpeg",
    "other_sets/face_recognition/rose_leslie/img1.jpg",
    "multi_face/compreface_010_2.jpg",
]
# Obama and Biden, both in the gallery.
MULTI_FACE = "multi_face/face_recognition_obama_and_biden.jpg"
NO_FACE = "no_face/dlib_dogs.jpg"
# 4 s, Barack Obama only: 8 sampled frames.
CLIP = "obama_whcd_slacker.mp4"
# 10 s, several people, each in a few time ranges: a range starts late in the clip.
LONG_CLIP = "hamilton_short_clip.mp4"
KEY = "browser-test-key-0123456789abcdef"


def ingest_photos(
    search: ServiceProcess, paths: list[Path], headers: dict[str, str] | None = None
) -> list[dict]:
    response = httpx.post(
        f"{search.url}/images",
        files=[("image", (path.name, path.read_bytes())) for path in paths],
        headers=headers,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    images: list[dict[str, Any]] = response.json()["images"]
    return images


@pytest.fixture(scope="module")
def library(
    embedder: ServiceProcess, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A search service holding the gallery photos and the clips (analysed)."""
    with running_search_service(tmp_path_factory.mktemp("web") / "data", embedder) as search:
        ingest_photos(search, [shared_data / name for name in GALLERY])
        ingest_clips(search, shared_data / "videos", [CLIP, LONG_CLIP], timeout_s=120)
        yield search


def api_search(search: ServiceProcess, photo: Path) -> httpx.Response:
    return httpx.post(f"{search.url}/search", files={"image": (photo.name, photo.read_bytes())}, timeout=60)


def open_section(page: Page, search: ServiceProcess, section: str) -> None:
    page.goto(f"{search.url}/#{section}")
    expect(page.locator(f"#{section}")).to_be_visible()


def search_with(page: Page, photo: Path) -> None:
    page.locator("#search-file").set_input_files(photo)


def assert_every_image_has_alt_text(page: Page) -> None:
    missing = page.eval_on_selector_all(
        "img", "images => images.filter(image => !image.alt).map(image => image.src)"
    )
    assert not missing


def test_search_with_a_multi_face_photo_outlines_every_face_and_shows_hits(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    photo = shared_data / MULTI_FACE
    expected = api_search(library, photo).json()["faces"]
    assert len(expected) >= 2
    open_section(page, library, "search")
    search_with(page, photo)

    groups = page.locator(".query-face")
    expect(groups).to_have_count(len(expected))
    expect(page.locator(".query-photo .face")).to_have_count(len(expected))
    # Numbered 1..n on the photo, and one list of hits per face.
    assert page.locator(".query-photo .face-label").all_inner_texts() == [
        str(n + 1) for n in range(len(expected))
    ]
    for index, face in enumerate(expected):
        hits = groups.nth(index).locator(".hit")
        expect(hits).to_have_count(len(face["hits"]))
        top = hits.first
        expect(top.locator(".badge")).to_have_text("match" if face["hits"][0]["match"] else "no match")
        expect(top.locator(".score")).to_contain_text(f"{face['hits'][0]['score']:.3f}")
        # The matched face is outlined on the matched photo, which has loaded.
        photo_hit = groups.nth(index).locator('.hit[data-source="image"]').first
        photo_hit.scroll_into_view_if_needed()  # photos load lazily
        expect(photo_hit.locator(".face")).to_have_count(1)
        expect(photo_hit.locator("img")).to_have_js_property("complete", True)
        assert photo_hit.locator("img").evaluate("image => image.naturalWidth") > 0
    # Obama and Biden are both in the gallery: their faces' best hits are matches.
    matched = sum(face["hits"][0]["match"] for face in expected)
    assert matched >= 2
    expect(page.locator(".query-face .hit:first-child .badge.match")).to_have_count(matched)
    assert_every_image_has_alt_text(page)
    screenshot(page, "search-multi-face")
    screenshot(page, "search-multi-face-window", full_page=False)
    # The README's picture (docs/images/ui-search.png is a copy): the same view with every photo
    # blurred, as the test photos carry no licence to be published.
    blur = "f => document.querySelectorAll('img, canvas').forEach(node => { node.style.filter = f; })"
    page.evaluate(blur, "blur(7px)")
    screenshot(page, "readme-search", full_page=False)
    page.evaluate(blur, "")

    # A phone-sized window: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "search-multi-face-phone")


def test_hits_are_drawn_from_the_search_answer_alone(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    open_section(page, library, "search")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlparse(request.url).path))
    search_with(page, shared_data / MULTI_FACE)
    photo_hits = page.locator('.hit[data-source="image"]')
    expect(photo_hits.first.locator(".face")).to_have_count(1)  # placed by the hit's width and height
    # Named by the file they were uploaded as (the gallery's photos have no external id).
    expect(page.locator('.hit[data-source="image"] .caption').first).to_contain_text(
        re.compile(r"\.(jpe?g|png) · default$")
    )
    assert not [path for path in asked if re.fullmatch(r"/(images|videos)/\d+", path)]


def test_a_photo_without_a_face_says_so_in_the_apis_words(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    photo = shared_data / NO_FACE
    refusal = api_search(library, photo)
    assert refusal.status_code == 422
    open_section(page, library, "search")
    search_with(page, photo)
    expect(page.locator("#search-status .message.error")).to_have_text(refusal.json()["detail"])
    expect(page.locator(".query-face")).to_have_count(0)
    screenshot(page, "search-no-face")


def test_ingest_of_several_photos_shows_each_and_a_summary(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    open_section(page, library, "ingest")
    faces = shared_data / "other_sets/face_recognition"
    photos = [
        faces / "barack_obama/obama1.jpg",
        faces / "joe_biden/biden2.jpg",
        shared_data / GALLERY[0],  # stored by the fixture: a duplicate
        shared_data / "no_face/facenet_pilatus800.jpg",
    ]
    # Playwright takes paths or buffers, not both: all as buffers.
    files = [FilePayload(name=path.name, mimeType="image/jpeg", buffer=path.read_bytes()) for path in photos]
    broken = FilePayload(name="broken.jpg", mimeType="image/jpeg", buffer=b"\xff\xd8\xff not a JPEG")
    page.locator("#photo-files").set_input_files([*files, broken])
    summary = page.locator("#photo-summary")
    expect(summary).to_contain_text("Done: 5 uploaded.")
    expect(summary).to_contain_text("3 photos stored with 2 faces")
    expect(summary).to_contain_text("1 duplicate")
    expect(summary).to_contain_text("1 failed")
    rows = page.locator(".upload-row")
    expect(rows.filter(has_text="obama1.jpg")).to_contain_text("stored, 1 face")
    expect(rows.filter(has_text=Path(GALLERY[0]).name)).to_contain_text("duplicate of photo")
    expect(rows.filter(has_text="facenet_pilatus800.jpg")).to_contain_text("stored, 0 faces")
    # The refusal is the API's own sentence, which names the file.
    expect(rows.filter(has_text="broken.jpg").locator(".outcome")).to_contain_text("broken.jpg")
    screenshot(page, "ingest-photos")


def test_ingest_of_a_video_is_followed_until_done(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    open_section(page, library, "ingest")
    page.locator("#video-file").set_input_files(shared_data / "videos" / "obama_whcd_globalnews.mp4")
    job = page.locator(".job[data-job]")
    expect(job).to_have_attribute("data-state", re.compile("queued|running|done"))
    expect(job).to_have_attribute("data-state", "done", timeout=120_000)
    expect(job.locator("progress")).to_have_js_property("value", 1)
    expect(job.locator(".counts")).to_contain_text(
        re.compile(r"[1-9]\d* frames analysed · [1-9]\d* faces? found")
    )
    expect(job.locator(".job-state")).to_contain_text(re.compile(r"Done: [1-9]\d* (person|people) found"))
    expect(job.locator("button")).to_have_count(0)  # nothing left to cancel
    screenshot(page, "ingest-video-done")


def test_a_time_range_plays_the_video_from_its_start(page: Page, library: ServiceProcess) -> None:
    open_section(page, library, "library")
    card = page.locator(".video-card").filter(has_text=LONG_CLIP)
    chips = card.locator(".chip")
    expect(chips.first).to_be_visible()
    assert_every_image_has_alt_text(page)
    screenshot(page, "library")
    # The latest start: a seek well into the video, not its own beginning.
    starts = [float(start) for start in chips.evaluate_all("chips => chips.map(chip => chip.dataset.start)")]
    assert max(starts) > 1
    chip = chips.nth(starts.index(max(starts)))
    video = page.locator("#player video")
    # Resolves when the player has sought: its currentTime is then where the seek landed.
    video.evaluate(
        "v => { window.sought = new Promise(done => v.addEventListener('seeked', done, { once: true })); }"
    )
    chip.focus()
    page.keyboard.press("Enter")  # by keyboard: chips are buttons

    expect(page.locator("#player")).to_have_attribute("open", "")
    page.evaluate("() => window.sought")
    assert abs(video.evaluate("v => v.currentTime") - max(starts)) <= 0.5
    expect(video).to_have_js_property("paused", False)  # and it plays from there
    screenshot(page, "video-playing", full_page=False)
    page.keyboard.press("Escape")
    expect(page.locator("#player")).not_to_have_attribute("open", "")
    # The dialog's close event, which pauses the player, is dispatched after the dialog closes.
    expect(video).to_have_js_property("paused", True)


def test_with_a_key_the_player_holds_the_video_in_a_blob_only_while_it_is_open(
    page: Page, library: ServiceProcess
) -> None:
    open_section(page, library, "library")
    # A service without keys ignores one: the page still fetches the video with it, into a blob.
    page.evaluate(f"() => localStorage.setItem('facesearch.apiKey', '{KEY}')")
    page.evaluate(
        "() => { window.revoked = []; const revoke = URL.revokeObjectURL.bind(URL);"
        " URL.revokeObjectURL = (url) => { window.revoked.push(url); revoke(url); }; }"
    )
    page.locator(".video-card").filter(has_text=CLIP).locator(".chip").first.click()
    video = page.locator("#player video")
    expect(video).to_have_attribute("src", re.compile(r"^blob:"))
    source = video.get_attribute("src")
    page.keyboard.press("Escape")
    expect(page.locator("#player")).not_to_have_attribute("open", "")
    # The dialog's close event, which lets the video go, is dispatched after the dialog closes.
    page.wait_for_function("() => !document.querySelector('#player video').hasAttribute('src')")
    assert page.evaluate("() => window.revoked") == [source]


def test_a_deleted_photo_leaves_the_search_results(
    page: Page, library: ServiceProcess, shared_data: Path
) -> None:
    obama = shared_data / "other_sets/face_recognition/barack_obama"
    (deleted,) = ingest_photos(library, [obama / "obama2.jpg"])
    open_section(page, library, "search")
    search_with(page, obama / "obama3.jpg")
    hit = page.locator(f'.hit[data-source="image"][data-id="{deleted["id"]}"]')
    expect(hit).to_have_count(1)

    page.locator("#tab-library").click()
    tile = page.locator(f'.tile[data-id="{deleted["id"]}"]')
    tile.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_have_attribute("open", "")
    expect(dialog).to_contain_text("obama2.jpg")
    screenshot(page, "delete-confirm", full_page=False)
    dialog.get_by_role("button", name="Delete photo").click()
    expect(tile).to_have_count(0)
    expect(page.locator("#photos-status")).to_contain_text("Deleted the photo obama2.jpg")

    # The same search again (the page re-runs it): the photo is gone from the hits, the rest stay.
    page.locator("#tab-search").click()
    expect(page.locator(".query-face .hit").first).to_be_visible()
    expect(hit).to_have_count(0)
    screenshot(page, "search-after-delete")
    assert httpx.get(f"{library.url}/images/{deleted['id']}").status_code == 404


def test_a_library_face_or_person_searches_with_it(page: Page, library: ServiceProcess) -> None:
    open_section(page, library, "library")
    tile = page.locator(".tile").filter(has_text="biden.jpg")
    photo_id = tile.get_attribute("data-id")
    tile.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search")).to_be_visible()
    expect(page.locator(".query-photo.stored")).to_contain_text("biden.jpg")
    expect(page.locator(".query-photo.stored .face")).to_have_count(1)
    expect(page.locator(".query-face .hit").first).to_be_visible()
    # The face itself is not among its hits.
    expect(page.locator(f'.hit[data-source="image"][data-id="{photo_id}"]')).to_have_count(0)
    screenshot(page, "search-by-stored-face")

    page.locator("#tab-library").click()
    page.locator(".video-card").filter(has_text=CLIP).locator(".person-button").first.click()
    expect(page.locator(".query-photo.stored")).to_contain_text(f"Person from {CLIP}")
    # Obama's photos in the gallery match the person.
    obama = page.locator('.hit.match[data-source="image"]').filter(has_text=re.compile(r"obama\d*\.jpg"))
    expect(obama.first).to_be_visible()
    screenshot(page, "search-by-video-person")


def test_with_keys_on_the_page_asks_for_a_key_and_keeps_it(
    page: Page, embedder: ServiceProcess, shared_data: Path, tmp_path: Path
) -> None:
    keyed = search_service(str(tmp_path / "data"), embedder.url)
    keyed.env["SEARCH_API_KEYS"] = f"{KEY}:write"
    with keyed.running():
        ingest_photos(keyed, [shared_data / GALLERY[1]], headers={"X-API-Key": KEY})
        open_section(page, keyed, "library")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_have_attribute("open", "")
        expect(dialog).to_contain_text("an API key is required")
        screenshot(page, "key-prompt", full_page=False)

        dialog.get_by_label("API key").fill(KEY)
        dialog.get_by_role("button", name="Use this key").click()
        expect(dialog).not_to_have_attribute("open", "")
        # The thumbnail loads with the key too (an <img> cannot send it: the page fetches it).
        thumbnail = page.locator(".tile img")
        expect(thumbnail).to_have_count(1)
        page.wait_for_function("() => document.querySelector('.tile img').naturalWidth > 0")
        expect(page.locator(".collection")).to_contain_text(["All collections", re.compile("1 photo")])

        # Kept in the browser: a reload asks no more.
        page.reload()
        expect(page.locator(".tile")).to_have_count(1)
        expect(dialog).not_to_have_attribute("open", "")
        screenshot(page, "key-library")


def test_the_library_pages_through_photos_with_small_lazy_thumbnails(
    page: Page, embedder: ServiceProcess, shared_data: Path, tmp_path: Path
) -> None:
    photos = sorted((shared_data / "lfw_dev").glob("*/*.jpg"))[:50]  # a page of 48, and 2 more
    with running_search_service(tmp_path / "data", embedder) as search:
        for batch in (photos[:25], photos[25:]):
            ingest_photos(search, batch)
        open_section(page, search, "library")
        tiles = page.locator("#photos .tile")
        expect(tiles).to_have_count(48)
        expect(page.locator("#photos-page")).to_have_text("page 1")
        expect(page.locator("#photos-prev")).to_be_disabled()
        # Thumbnails sized for the grid, fetched as they scroll into view.
        first = tiles.first.locator("img")
        expect(first).to_have_attribute("loading", "lazy")
        expect(first).to_have_attribute("src", re.compile(r"/images/\d+/thumbnail\?max_side=256$"))

        page.locator("#photos-next").click()
        expect(tiles).to_have_count(2)
        expect(page.locator("#photos-page")).to_have_text("page 2")
        expect(page.locator("#photos-next")).to_be_disabled()
        screenshot(page, "library-page-2")
        page.locator("#photos-prev").click()
        expect(tiles).to_have_count(48)
