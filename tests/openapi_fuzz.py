"""What the schemathesis tests of both services share: the schema as fuzzed, the file parts drawn,
the checks and the bounds (tests/search/api/test_schema_fuzz.py, tests/embedder/api/test_schema_fuzz.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import unregister_string_format
from schemathesis.specs.openapi.checks import status_code_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tools.processes import ServiceProcess

# What issue 10 asks of every answer: no 5xx, and no status the route does not document.
CHECKS = [not_a_server_error, status_code_conformance]

# Derandomized, so that every run sends the same cases; no deadline, as a 2-core CI machine shared
# with other work has slow moments. Health checks flag slow or filtered data generation, which
# multipart bodies with files always are.
BOUNDED = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _files_as_binary(node: Any) -> Any:
    if isinstance(node, dict):
        marked = {key: _files_as_binary(value) for key, value in node.items()}
        if marked.get("contentMediaType") == "application/octet-stream":
            marked["format"] = "binary"
        return marked
    if isinstance(node, list):
        return [_files_as_binary(item) for item in node]
    return node


def app_schema(app: FastAPI) -> OpenApiSchema:
    """The app's own OpenAPI schema, read without starting it, with every file part also marked
    ``format: binary``.

    FastAPI writes OpenAPI 3.1's ``contentMediaType: application/octet-stream`` for a file part,
    for which schemathesis draws text; ``format: binary`` (3.0's spelling, which the hand-written
    request bodies use) makes it draw from the ``binary`` strategy that :func:`files_drawn_from`
    registers."""
    return schemathesis.openapi.from_dict(_files_as_binary(app.openapi()))


@contextlib.contextmanager
def files_drawn_from(files: st.SearchStrategy[bytes]) -> Iterator[None]:
    """While inside, file parts are drawn from ``files`` or are random bytes, half and half each:
    real images reach past decoding, with every fuzzed field beside them."""
    schemathesis.openapi.format("binary", st.one_of(files, st.binary()))
    try:
        yield
    finally:
        # Back to schemathesis's own strategy for other tests in this process.
        unregister_string_format("binary")


FuzzTest = Callable[..., None]


def fuzz_tests(
    schema: OpenApiSchema,
    *,
    examples: int,
    refused_examples: int,
    refused_callers: Mapping[str, dict[str, str]],
) -> tuple[FuzzTest, FuzzTest]:
    """The two tests each service's module collects, one per operation of ``schema``: against the
    ``service`` fixture as it starts by default, and against ``keyed_service`` (keys configured) for
    each of ``refused_callers`` (their names and the headers they send)."""

    @pytest.mark.slow
    @schema.parametrize()
    @settings(BOUNDED, max_examples=examples)
    def test_no_server_error_and_no_undocumented_status(
        case: schemathesis.Case, service: ServiceProcess
    ) -> None:
        case.call_and_validate(base_url=service.url, checks=CHECKS)

    @pytest.mark.slow
    @pytest.mark.parametrize("caller", list(refused_callers))
    @schema.parametrize()
    @settings(BOUNDED, max_examples=refused_examples)
    def test_refused_callers_get_documented_statuses(
        case: schemathesis.Case, keyed_service: ServiceProcess, caller: str
    ) -> None:
        case.call_and_validate(base_url=keyed_service.url, headers=refused_callers[caller], checks=CHECKS)

    return test_no_server_error_and_no_undocumented_status, test_refused_callers_get_documented_statuses
