"""schemathesis over the embedder's OpenAPI schema: no input it generates, valid or not, gets a
server error or a status the route does not document, whoever sends it.

The embedder runs as a process with the real models (``python -m embedder_service`` on a free
port), as the search service reaches it. File parts are random bytes, small generated images of
every pixel mode and format the decoder must handle, or real photos with faces, so that
detection, alignment and embedding run with every fuzzed parameter beside them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import strategies as st
from PIL import Image

from embedder_service.main import create_app
from embedder_service.settings import EmbedderSettings
from tests.openapi_fuzz import app_schema, files_drawn_from, fuzz_tests
from tools.processes import ServiceProcess, embedder_service

# Cases per operation (schemathesis adds some explicit ones): under a minute in all on 2 cores.
EXAMPLES = 200
# Per operation and refused caller: what they are refused with hardly depends on the input.
REFUSED_EXAMPLES = 10
KEY = "fuzz-embedder-key-0123456789"
# Whom the access control refuses, and the headers they send.
REFUSED_CALLERS = {"no key": {}, "foreign Host": {"X-API-Key": KEY, "Host": "attacker.example"}}
# Pixel modes with a format that stores each: 16-bit, 32-bit integer and float among them (issue 10).
MODES_AND_FORMATS = [
    ("RGB", "JPEG"),
    ("L", "JPEG"),
    ("CMYK", "JPEG"),
    ("RGB", "PNG"),
    ("RGBA", "PNG"),
    ("P", "PNG"),
    ("LA", "PNG"),
    ("1", "PNG"),
    ("I;16", "PNG"),
    ("I", "TIFF"),
    ("F", "TIFF"),
    ("RGB", "WEBP"),
    ("RGB", "BMP"),
    ("P", "GIF"),
]
# One face, several, none.
REAL_PHOTOS = [
    "lfw_dev/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "multi_face/mtcnn_office5.jpg",
    "no_face/compreface_017_0.jpg",
]

schema = app_schema(create_app(EmbedderSettings(log_json=False, log_level="WARNING")))


def _image(mode_and_format: tuple[str, str], width: int, height: int, sigma: int) -> bytes:
    mode, fmt = mode_and_format
    buffer = io.BytesIO()
    Image.effect_noise((width, height), sigma).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def images(shared_data: Path) -> Iterator[None]:
    generated = st.builds(
        _image,
        st.sampled_from(MODES_AND_FORMATS),
        st.integers(1, 200),
        st.integers(1, 200),
        st.integers(0, 128),
    )
    photos = st.sampled_from([(shared_data / path).read_bytes() for path in REAL_PHOTOS])
    with files_drawn_from(st.one_of(generated, photos)):
        yield


@pytest.fixture(scope="module")
def service(models_dir: Path) -> Iterator[ServiceProcess]:
    """As it starts by default: on loopback, without a key."""
    with embedder_service(models_dir).running(timeout_s=180) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_service(models_dir: Path) -> Iterator[ServiceProcess]:
    """With the key the search service would be given."""
    service = embedder_service(models_dir)
    service.env["EMBEDDER_API_KEY"] = KEY
    with service.running(timeout_s=180) as running:
        yield running


test_no_server_error_and_no_undocumented_status, test_refused_callers_get_documented_statuses = fuzz_tests(
    schema, examples=EXAMPLES, refused_examples=REFUSED_EXAMPLES, refused_callers=REFUSED_CALLERS
)
