"""Issue 10, "hold under abuse": requests built to break the search service get a 4xx in FastAPI's
``{"detail": ...}`` shape, never a 5xx, and what was stored before stays listed and searchable."""

from __future__ import annotations

import hashlib
import io
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search_service.api.errors import MAX_ECHOED_CHARS, RETRY_AFTER_S
from search_service.api.schemas import MAX_EXTERNAL_ID_CHARS, MAX_ID, MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.conftest import REPO_ROOT
from tests.search.api.helpers import ingest, post_images, search
from tests.search.fakes import FakeEmbedder, photo
from tests.search.polling import poll_until

BEYOND = MAX_ID + 1  # 9223372036854775808: no SQLite integer holds it


@pytest.fixture
def stored(client: TestClient) -> dict[str, Any]:
    """A photo of alice stored before the abuse, as GET /images lists it."""
    [record] = ingest(client, photo("alice"), external_id="alice-1", metadata='{"album": "2024"}')
    del record["duplicate"]
    return record


def assert_intact(client: TestClient, stored: dict[str, Any]) -> None:
    """The stored photo is still listed, unchanged, and found by another photo of alice."""
    assert stored in client.get("/images").json()["images"]
    assert client.get(f"/images/{stored['id']}").json() == stored
    [face] = search(client, photo("alice", variant=1))["faces"]
    assert [hit["id"] for hit in face["hits"] if hit["match"]] == [stored["id"]]


def _beyond_error(location: str, name: str, value: int = BEYOND) -> dict[str, Any]:
    """FastAPI's 422 for an integer outside 1..MAX_ID (0..MAX_ID for `after`)."""
    if value > MAX_ID:
        return {
            "type": "less_than_equal",
            "loc": [location, name],
            "msg": f"Input should be less than or equal to {MAX_ID}",
            "input": str(value),
            "ctx": {"le": MAX_ID},
        }
    bound = 0 if name == "after" else 1
    return {
        "type": "greater_than_equal",
        "loc": [location, name],
        "msg": f"Input should be greater than or equal to {bound}",
        "input": str(value),
        "ctx": {"ge": bound},
    }


# --- 1. ids and `after` beyond SQLite's 64-bit integers (were a 500: OverflowError) ------------


@pytest.mark.parametrize(
    ("method", "path", "name", "value"),
    [
        ("get", "/images/{}", "image_id", BEYOND),
        ("get", "/images/{}/file", "image_id", BEYOND),
        ("delete", "/images/{}", "image_id", BEYOND),
        ("get", "/jobs/{}", "job_id", BEYOND),
        ("delete", "/jobs/{}", "job_id", BEYOND),
        ("get", "/images/{}", "image_id", -BEYOND - 1),
        ("delete", "/jobs/{}", "job_id", 0),
    ],
)
def test_path_id_outside_64_bits_is_a_422(
    client: TestClient, stored: dict[str, Any], method: str, path: str, name: str, value: int
) -> None:
    response = client.request(method, path.format(value))
    assert response.status_code == 422
    assert response.json() == {"detail": [_beyond_error("path", name, value)]}
    assert_intact(client, stored)


def test_largest_id_is_merely_unknown(client: TestClient, stored: dict[str, Any]) -> None:
    response = client.get(f"/images/{MAX_ID}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no image with id {MAX_ID}"}
    assert_intact(client, stored)


def test_after_beyond_64_bits_is_a_422(client: TestClient, stored: dict[str, Any]) -> None:
    response = client.get("/images", params={"after": BEYOND})
    assert response.status_code == 422
    assert response.json() == {"detail": [_beyond_error("query", "after")]}
    assert client.get("/images", params={"after": MAX_ID}).json() == {"images": [], "next_after": None}
    assert_intact(client, stored)


@pytest.mark.parametrize(
    ("method", "path", "location", "name"),
    [
        ("get", f"/videos/{BEYOND}", "path", "video_id"),
        ("delete", f"/videos/{BEYOND}", "path", "video_id"),
        ("get", f"/videos/{BEYOND}/thumbnails/1", "path", "video_id"),
        ("get", f"/videos/1/thumbnails/{BEYOND}", "path", "track_id"),
        ("get", f"/videos?after={BEYOND}", "query", "after"),
    ],
)
def test_video_ids_outside_64_bits_are_a_422(
    client: TestClient, stored: dict[str, Any], method: str, path: str, location: str, name: str
) -> None:
    client_500s_as_answers = TestClient(client.app, raise_server_exceptions=False)
    response = client_500s_as_answers.request(method, path)
    assert response.status_code == 422
    assert response.json() == {"detail": [_beyond_error(location, name)]}
    assert_intact(client, stored)


# --- 2. NaN and Infinity in metadata (were a 500, or stored as null) ---------------------------


@pytest.mark.parametrize(
    ("metadata", "constant"),
    [("NaN", "NaN"), ("-Infinity", "-Infinity"), ('{"a": NaN}', "NaN"), ('{"a": [1, Infinity]}', "Infinity")],
)
def test_non_finite_metadata_is_a_422_naming_metadata(
    client: TestClient, stored: dict[str, Any], metadata: str, constant: str
) -> None:
    answer = post_images(client, ("m.png", photo("mallory")), metadata=metadata)
    assert answer == {
        "status": 422,
        "detail": [
            {
                "type": "json_invalid",
                "loc": ["body", "metadata"],
                "msg": f"Invalid JSON: {constant} is not a JSON number",
                "input": metadata,
                "ctx": {"constant": constant},
            }
        ],
    }
    assert_intact(client, stored)
    assert client.get("/images").json()["images"] == [stored]


def test_number_beyond_a_float_in_metadata_is_a_422(client: TestClient, stored: dict[str, Any]) -> None:
    """json.loads reads 1e999 as Infinity without asking parse_constant: stored, it broke every listing."""
    answer = post_images(client, ("m.png", photo("mallory")), metadata='{"a": 1e999}')
    assert answer == {
        "status": 422,
        "detail": [
            {
                "type": "json_invalid",
                "loc": ["body", "metadata"],
                "msg": "Invalid JSON: 1e999 is out of range",
                "input": '{"a": 1e999}',
                "ctx": {"number": "1e999"},
            }
        ],
    }
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


# --- 3. two query photos in one search (already a 422: the hand parser counts file parts) ------


def test_two_image_parts_in_search_is_a_422(client: TestClient, stored: dict[str, Any]) -> None:
    response = client.post(
        "/search",
        files=[
            ("image", ("a.png", photo("alice"), "image/png")),
            ("image", ("b.png", photo("bob"), "image/png")),
        ],
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["body", "image"],
                "msg": "send one file per request",
                "input": None,
            }
        ]
    }
    assert_intact(client, stored)


# --- 4. unbounded free text (was accepted and stored) ---------------------------------------


def _cut(text: str) -> str:
    """How a 422 echoes a long input back."""
    return f"{text[:MAX_ECHOED_CHARS]}... ({len(text)} characters)"


def test_huge_external_id_with_a_nul_is_a_422(client: TestClient, stored: dict[str, Any]) -> None:
    external_id = "x" * 100_000 + "\x00"
    answer = post_images(client, ("m.png", photo("mallory")), external_id=external_id)
    assert answer == {
        "status": 422,
        "detail": [
            {
                "type": "string_too_long",
                "loc": ["body", "external_id", 0],
                "msg": f"String should have at most {MAX_EXTERNAL_ID_CHARS} characters",
                "input": _cut(external_id),
                "ctx": {"max_length": MAX_EXTERNAL_ID_CHARS},
            }
        ],
    }
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


@pytest.mark.parametrize("external_id", ["a\x00b", "line\nbreak", "del\x7f", "c1\x85"])
def test_control_characters_in_external_id_are_a_422(
    client: TestClient, stored: dict[str, Any], external_id: str
) -> None:
    answer = post_images(client, ("m.png", photo("mallory")), external_id=external_id)
    assert answer == {
        "status": 422,
        "detail": [
            {
                "type": "string_control_characters",
                "loc": ["body", "external_id", 0],
                "msg": "must not contain control characters",
                "input": external_id,
            }
        ],
    }
    # The same rule for videos: refused before anything of the upload is kept.
    response = client.post(
        "/videos",
        files={"video": ("v.mp4", b"not looked at", "video/mp4")},
        data={"external_id": external_id},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "external_id"]
    assert client.get("/videos").json()["videos"] == []
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


def test_longest_external_id_is_stored(client: TestClient) -> None:
    external_id = "é" * MAX_EXTERNAL_ID_CHARS
    [record] = ingest(client, photo("erin"), external_id=external_id)
    assert record["external_id"] == external_id
    assert (
        client.get("/images", params={"external_id": external_id}).json()["images"][0]["id"] == record["id"]
    )
    response = client.get("/images", params={"external_id": "x" * (MAX_EXTERNAL_ID_CHARS + 1)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "external_id"]


def test_900_kb_of_metadata_is_a_422(client: TestClient, stored: dict[str, Any]) -> None:
    metadata = '{"a": "' + "x" * 900_000 + '"}'
    answer = post_images(client, ("m.png", photo("mallory")), metadata=metadata)
    assert answer == {
        "status": 422,
        "detail": [
            {
                "type": "json_too_long",
                "loc": ["body", "metadata"],
                "msg": f"metadata is 900009 bytes of JSON, the limit is {MAX_METADATA_BYTES}",
                "input": _cut(metadata),
                "ctx": {"size": 900_009, "limit": MAX_METADATA_BYTES},
            }
        ],
    }
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


def test_metadata_at_the_limits_is_stored_and_deeper_is_a_422(
    client: TestClient, stored: dict[str, Any]
) -> None:
    padding = MAX_METADATA_BYTES - len('{"a": ""}')
    [record] = ingest(client, photo("frank"), metadata='{"a": "' + "x" * padding + '"}')
    assert len(record["metadata"]["a"]) == padding
    deepest = '{"a": ' * (MAX_METADATA_DEPTH - 1) + "[]" + "}" * (MAX_METADATA_DEPTH - 1)
    assert ingest(client, photo("gina"), metadata=deepest)[0]["metadata"]["a"]["a"]
    too_deep = '{"a": ' * MAX_METADATA_DEPTH + "[]" + "}" * MAX_METADATA_DEPTH
    answer = post_images(client, ("m.png", photo("mallory")), metadata=too_deep)
    assert answer["status"] == 422
    [error] = answer["detail"]
    assert error["loc"] == ["body", "metadata"] and error["type"] == "json_too_deep"
    assert error["msg"] == f"metadata nests deeper than {MAX_METADATA_DEPTH} levels"
    # Deeper than Python's recursion limit: refused as JSON, not a RecursionError.
    abyss = "[" * 30_000 + "]" * 30_000
    answer = post_images(client, ("m.png", photo("mallory")), metadata=abyss)
    assert answer["status"] == 422 and answer["detail"][0]["loc"] == ["body", "metadata"]
    assert len(client.get("/images").json()["images"]) == 3
    assert_intact(client, stored)


# --- 5. a header declaring 30000x30000 pixels (was a 500: Pillow's DecompressionBombError) ----


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


BOMB_DETAIL = "bomb.png: image too large: 30000x30000 = 900000000 pixels, the limit is 40000000"


@pytest.mark.parametrize("declared_type", ["image/png", "application/octet-stream"])
def test_decompression_bomb_is_the_embedders_413_naming_the_file(
    client: TestClient, stored: dict[str, Any], fake_embedder: FakeEmbedder, declared_type: str
) -> None:
    bomb = _png_declaring(30_000, 30_000)
    response = client.post("/images", files={"image": ("bomb.png", bomb, declared_type)})
    assert response.status_code == 413
    assert response.json() == {"detail": BOMB_DETAIL}
    response = client.post("/search", files={"image": ("bomb.png", bomb, declared_type)})
    assert response.status_code == 413
    assert response.json() == {"detail": BOMB_DETAIL}
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


# --- 6. a 200-byte truncated JPEG beside a good photo (row 2: was a 500 retried into a 503, and
# the good photo beside it refused too) ---------------------------------------------------------


def _truncated_jpeg() -> bytes:
    """The first 200 bytes of a JPEG: its header, cut off before the image data."""
    pixels = np.random.default_rng(7).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()[:200]


def test_truncated_jpeg_fails_only_itself(client: TestClient, stored: dict[str, Any]) -> None:
    cut, good = _truncated_jpeg(), photo("bob")
    response = client.post(
        "/images",
        files=[("image", ("cut.jpg", cut, "image/jpeg")), ("image", ("bob.png", good, "image/png"))],
    )
    assert response.status_code == 200
    refused, bob = response.json()["images"]
    assert refused == {
        "id": None,
        "faces": [],
        "duplicate": False,
        "error": {"status": 400, "detail": "cut.jpg: cannot decode image: Truncated File Read"},
    }
    assert client.get(f"/images/{bob['id']}").json()["sha256"] == hashlib.sha256(good).hexdigest()
    assert client.get(f"/images/{bob['id']}/file").content == good
    assert [image["id"] for image in client.get("/images").json()["images"]] == [stored["id"], bob["id"]]
    # Alone, it is the 400 it was meant to be, and nothing is stored.
    response = client.post("/images", files={"image": ("cut.jpg", cut, "image/jpeg")})
    assert response.status_code == 400
    assert response.json() == {"detail": "cut.jpg: cannot decode image: Truncated File Read"}
    assert len(client.get("/images").json()["images"]) == 2
    assert_intact(client, stored)


def test_an_embedder_500_is_a_502_without_retries(
    client: TestClient, stored: dict[str, Any], fake_embedder: FakeEmbedder
) -> None:
    """An embedder that still answers a truncated photo with a 500: relayed at once as a 502 (a
    retry would have been answered, and the request stored)."""
    fake_embedder.fail_next = [500]
    response = client.post("/images", files={"image": ("cut.jpg", _truncated_jpeg(), "image/jpeg")})
    assert response.status_code == 502
    assert response.json() == {"detail": "embedder answered 500: answering 500 as told"}
    assert client.get("/images").json()["images"] == [stored]
    assert_intact(client, stored)


# --- 7. a hung embedder (row 4: a 503 only after 482 s) -------------------------------------


@pytest.fixture
def embedder_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The fake embedder in a process of its own, to stop as a hung one stops; and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.search.fakes"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()
    finally:
        process.kill()  # stopped or not
        process.wait()


def test_a_hung_embedder_is_a_503_within_10_s_until_it_resumes(
    make_settings: Callable[..., SearchSettings], embedder_process: tuple[subprocess.Popen[str], str]
) -> None:
    """With the default settings: the health probe opens the circuit, the request in flight is
    abandoned and the next fails at once; when the embedder resumes, requests succeed again."""
    process, url = embedder_process
    with TestClient(create_app(make_settings(embedder={"url": url}))) as client:
        [record] = ingest(client, photo("alice"), external_id="alice-1")
        del record["duplicate"]
        process.send_signal(signal.SIGSTOP)
        try:
            for route in ("/search", "/images"):
                started = time.monotonic()
                response = client.post(
                    route, files={"image": ("q.png", photo("alice", variant=1), "image/png")}
                )
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert elapsed < 10, f"{route} answered after {elapsed:.1f} s"
                assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
                assert response.json()["detail"].startswith("the embedder is unavailable (")
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and not health["embedder"]["ok"]
            assert 'facesearch_circuit_open{name="embedder"} 1.0' in client.get("/metrics").text
            assert client.get("/images").json()["images"] == [record]  # reads still served
        finally:
            process.send_signal(signal.SIGCONT)
        poll_until(
            lambda: client.get("/healthz").json()["status"],
            lambda status: status == "ok",
            what="the circuit closed",
            timeout_s=10,
        )
        assert 'facesearch_circuit_open{name="embedder"} 0.0' in client.get("/metrics").text
        assert_intact(client, record)
        [bob] = ingest(client, photo("bob"))
        assert [image["id"] for image in client.get("/images").json()["images"]] == [record["id"], bob["id"]]


# --- never a 5xx: a bounded property test over every route ----------------------------------

_BOUNDARY = "abuse-boundary"
_BAD_INTEGERS = [
    "-1",
    "0",
    "1.5",
    "1e3",
    "abc",
    "",
    " 7",
    "0x10",
    "nan",
    "inf",
    "%FF",
    "%00",
    "9" * 40,
    "-" + "9" * 40,
]
_BAD_NUMBERS = ["nan", "-inf", "Infinity", "1e999", "-1e999", "9" * 400, "", "%FF", "1,5", "true"]
_BAD_TEXT = ["%FF%FE", "%00", "a" * 3000, "../../etc/passwd", "%C0%AF", "\u202e" * 10]
_QUERY_NAMES = {
    "/images": {
        "after": _BAD_INTEGERS,
        "limit": _BAD_INTEGERS,
        "collection": _BAD_TEXT,
        "sha256": _BAD_TEXT,
        "external_id": _BAD_TEXT,
    },
    "/videos": {"after": _BAD_INTEGERS, "limit": _BAD_INTEGERS, "collection": _BAD_TEXT},
    "/search": {"k": _BAD_INTEGERS, "threshold": _BAD_NUMBERS, "source": _BAD_TEXT, "collection": _BAD_TEXT},
}


def _part(
    name: bytes, value: bytes, filename: bytes | None = None, content_type: bytes | None = None
) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    headers = disposition + (b"\r\nContent-Type: " + content_type if content_type else b"")
    return b"--" + _BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"


def _body(parts: list[bytes]) -> bytes:
    return b"".join(parts) + b"--" + _BOUNDARY.encode() + b"--\r\n"


def _garbage(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(size))


def _bad_body(rng: random.Random, file_field: str, text_fields: list[str]) -> tuple[bytes, str]:
    """A body and Content-Type that a well-behaved client would not send."""
    multipart = f"multipart/form-data; boundary={_BOUNDARY}"
    file_part = _part(
        file_field.encode(), photo("mallory", variant=rng.randrange(10**6)), b"m.png", b"image/png"
    )
    # The form fields get bytes that are no UTF-8, or a NUL, or a name that is no field.
    field = rng.choice([*text_fields, "\xff", ""]).encode("latin-1")
    bad_field = _part(field, rng.choice([b"\xff\xfe\xfd", b"\x00", b"\xc0\xaf", _garbage(rng, 12)]))
    choices: list[Callable[[], tuple[bytes, str]]] = [
        lambda: (b'{"image": "aGVsbG8="}', "application/json"),
        lambda: (b"image=abc", "application/x-www-form-urlencoded"),
        lambda: (_garbage(rng, 200), "text/plain"),
        lambda: (_body([file_part]), "multipart/form-data"),  # no boundary
        lambda: (_body([file_part]), "multipart/form-data; boundary=other"),
        lambda: (b"", multipart),
        lambda: (_garbage(rng, 300), multipart),
        lambda: (_body([file_part])[: rng.randrange(1, len(file_part))], multipart),  # cut short
        lambda: (_body([file_part, bad_field]), multipart),
        lambda: (_body([bad_field]), multipart),  # no file
        lambda: (_body([file_part, file_part]), multipart),
        lambda: (_body([_part(file_field.encode(), b"", b"", b"image/png")]), multipart),  # an empty file
        lambda: (_body([b"Content-Type: image/png\r\n\r\nnot a part"]), multipart),
        lambda: (_body([file_part]).replace(b"\r\n\r\n", b"\r\n", 1), multipart),  # headers run into data
        lambda: (_body([_part(file_field.encode(), b"x", b"\xff\xfe.png", b"\xff/\xfe")]), multipart),
    ]
    return rng.choice(choices)()


def _bad_query(rng: random.Random, path: str) -> str:
    names = _QUERY_NAMES.get(path, {"after": _BAD_INTEGERS})
    chosen = rng.sample(sorted(names), rng.randint(1, len(names)))
    return "&".join(f"{name}={rng.choice(names[name])}" for name in chosen)


_ROUTES: list[tuple[str, str, list[str]]] = [
    ("get", "/images/{}", _BAD_INTEGERS),
    ("get", "/images/{}/file", _BAD_INTEGERS),
    ("delete", "/images/{}", _BAD_INTEGERS),
    ("get", "/jobs/{}", _BAD_INTEGERS),
    ("delete", "/jobs/{}", _BAD_INTEGERS),
    ("get", "/videos/{}", _BAD_INTEGERS),
    ("delete", "/videos/{}", _BAD_INTEGERS),
    ("get", "/videos/{}/thumbnails/{}", _BAD_INTEGERS),
]
CASES_PER_ROUTE = 12


@pytest.mark.parametrize("seed", range(3))
def test_malformed_requests_never_get_a_5xx(
    client: TestClient, stored: dict[str, Any], fake_embedder: FakeEmbedder, seed: int
) -> None:
    rng = random.Random(seed)
    answers = TestClient(client.app, raise_server_exceptions=False)
    sent: list[tuple[str, str, int]] = []

    def send(method: str, url: str, **kwargs: Any) -> None:
        response = answers.request(method, url, **kwargs)
        sent.append((method, url[:120], response.status_code))
        assert response.status_code < 500, (
            f"{method.upper()} {url[:200]}: {response.status_code} {response.text[:500]}"
        )
        assert "detail" in response.json() or response.status_code < 400, response.text[:500]

    for _ in range(CASES_PER_ROUTE):
        for method, template, values in _ROUTES:
            ids = [rng.choice(values) for _ in range(template.count("{}"))]
            send(
                method,
                template.format(*ids) + (f"?{_bad_query(rng, template)}" if rng.random() < 0.3 else ""),
            )
        for path in ("/images", "/videos", "/search"):
            body, content_type = _bad_body(
                rng,
                {"/images": "image", "/videos": "video", "/search": rng.choice(["image", "video"])}[path],
                {
                    "/images": ["collection", "external_id", "metadata"],
                    "/videos": ["collection", "external_id"],
                    "/search": ["k", "threshold", "collection", "source"],
                }[path],
            )
            query = f"?{_bad_query(rng, path)}" if rng.random() < 0.5 else ""
            send("post", path + query, content=body, headers={"content-type": content_type})
        for path in ("/images", "/videos", "/collections", "/healthz"):
            send("get", f"{path}?{_bad_query(rng, path)}")
        send("get", f"/images?sha256={quote(_garbage(rng, 20))}&sha256=%FF")
    assert len(sent) == CASES_PER_ROUTE * (len(_ROUTES) + 3 + 4 + 1)
    assert stored in client.get("/images").json()["images"]
    assert_intact(client, stored)
