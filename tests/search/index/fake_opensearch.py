"""An in-process OpenSearch cluster: the REST subset the OpenSearch index backend speaks.

It plugs into opensearch-py as the ``connection_class``, so the client's real Transport (retries,
error mapping), serializer and bulk helpers run on every call. State lives in a ``FakeCluster``;
every client built with its ``connection_class`` talks to that one cluster, so a second backend
handle sees what the first wrote.

What it models, because the backend's correctness depends on it:
- visibility: writes reach search, ``_count`` and ``_delete_by_query`` only after a refresh
  (``refresh=true|wait_for`` or ``_refresh``); ``_mget`` is real-time;
- the ``knn`` query with ``filter`` inside it, evaluated exactly by brute force over the
  filtered documents, scored as OpenSearch documents per space type ("Spaces" page):
  innerproduct ``ip + 1`` if ``ip > 0`` else ``1 / (1 - ip)``; cosinesimil ``(1 + cos) / 2``;
  scores are float32, as the server computes and renders them;
- ``dynamic: strict`` mappings, keyword fields matched as strings, vector dimensions;
- faults: a cluster that is down or still booting (connection refused), transient error
  statuses, failed shards,
  a red status.

A request it does not know (path, parameter, body shape, query clause) raises
``UnsupportedRequest``, an AssertionError no backend code catches, so a wrong request fails the
test that sent it instead of getting a plausible answer. One shard is modelled.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opensearchpy.connection import Connection
from opensearchpy.exceptions import ConnectionError as TransportConnectionError

Json = dict[str, Any]
MAX_WINDOW = 10_000


class UnsupportedRequest(AssertionError):
    """The backend sent something this fake, and perhaps OpenSearch, does not understand."""


class _HttpError(Exception):
    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = {"error": {"type": kind, "reason": reason}, "status": status}


def _inner_product(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    ip = vectors @ query
    one = np.float32(1)
    return np.where(ip > 0, ip + one, one / (one - np.minimum(ip, 0))).astype(np.float32)


def _cosine(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    cos = (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return ((np.float32(1) + cos) / np.float32(2)).astype(np.float32)


SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "innerproduct": _inner_product,
    "cosinesimil": _cosine,
}


def _rendered(score: np.float32) -> float:
    # OpenSearch writes a float score in its shortest decimal form, as float32 prints.
    return float(str(score))


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise UnsupportedRequest(what)


def _only_keys(value: Any, allowed: Collection[str], what: str) -> Json:
    _require(isinstance(value, dict), f"{what} must be an object, got {value!r}")
    unknown = set(value) - set(allowed)
    _require(not unknown, f"{what} has keys the fake does not support: {sorted(unknown)}")
    return value


@dataclass
class _Index:
    settings: Json
    mappings: Json
    docs: dict[str, Json] = field(default_factory=dict)  # what _mget sees
    visible: dict[str, Json] = field(default_factory=dict)  # what search sees: the last refresh
    _vectors: np.ndarray | None = None

    def refresh(self) -> None:
        self.visible = dict(self.docs)
        self._vectors = None

    @property
    def properties(self) -> Json:
        return self.mappings["properties"]

    def vectors(self, field_name: str) -> np.ndarray:
        if self._vectors is None:
            dimension = self.properties[field_name]["dimension"]
            rows = [doc[field_name] for doc in self.visible.values()]
            self._vectors = np.array(rows, np.float32).reshape(len(rows), dimension)
        return self._vectors


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any


class FakeCluster:
    """One cluster's state. Build clients with ``connection_class=cluster.connection_class``."""

    def __init__(self, name: str = "fake-cluster") -> None:
        self.name = name
        self.indices: dict[str, _Index] = {}
        self.requests: list[Request] = []
        self.down = False
        self.status = "green"
        self.failed_shards = 0
        self._failures: list[int] = []
        self._refusals = 0
        self._lock = threading.Lock()
        self.connection_class: type[Connection] = type(
            "BoundFakeConnection", (FakeConnection,), {"cluster": self}
        )

    # -- what tests use ----------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with this error status (then behave again)."""
        self._failures += [status] * times

    def refuse_next(self, times: int) -> None:
        """Refuse the next ``times`` connections, as a node that is still booting does."""
        self._refusals += times

    def requests_to(self, method: str, suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def put_index(self, name: str, mappings: Json, settings: Json | None = None) -> None:
        """Create an index behind the backend's back (say, someone else's)."""
        self.indices[name] = _Index(settings or {"index": {}}, mappings)

    # -- the REST subset ---------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        with self._lock:
            self.requests.append(Request(method, path, params, body))
            refused = self.down or self._refusals > 0
            self._refusals = max(0, self._refusals - 1)
            if refused:
                raise TransportConnectionError("N/A", "fake cluster down", ConnectionRefusedError(111))
            if self._failures:
                status = self._failures.pop(0)
                return status, {"error": {"type": "fake_fault", "reason": "injected"}, "status": status}
            try:
                return 200, self._route(method, path, params, body)
            except _HttpError as error:
                return error.status, error.body

    def _route(self, method: str, path: str, params: dict[str, str], body: Any) -> Json:
        parts = [part for part in path.split("/") if part]
        if parts[:2] == ["_cluster", "health"] and method == "GET" and len(parts) <= 3:
            return self._health(parts[2] if len(parts) == 3 else None, params)
        if parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(params, body)
        if len(parts) == 1 and method == "PUT":
            return self._create(parts[0], params, body)
        if len(parts) == 1 and method == "DELETE":
            self._only_params(params, ("ignore_unavailable",))
            if parts[0] in self.indices or params.get("ignore_unavailable") != "true":
                self._index(parts[0])
                del self.indices[parts[0]]
            return {"acknowledged": True}
        _require(len(parts) == 2, f"unsupported request {method} {path}")
        name, endpoint = parts
        handlers: dict[tuple[str, str], Callable[[str, dict[str, str], Any], Json]] = {
            ("GET", "_mapping"): self._mapping,
            ("POST", "_refresh"): self._refresh,
            ("POST", "_bulk"): lambda index, p, b: self._bulk(p, b, index),
            ("GET", "_count"): self._count,
            ("POST", "_count"): self._count,
            ("POST", "_delete_by_query"): self._delete_by_query,
            ("GET", "_mget"): self._mget,
            ("POST", "_mget"): self._mget,
            ("GET", "_msearch"): self._msearch,
            ("POST", "_msearch"): self._msearch,
            ("GET", "_search"): self._search,
            ("POST", "_search"): self._search,
        }
        handler = handlers.get((method, endpoint))
        _require(handler is not None, f"unsupported request {method} {path}")
        assert handler is not None
        return handler(name, params, body)

    @staticmethod
    def _only_params(params: Mapping[str, str], allowed: Collection[str]) -> None:
        unknown = set(params) - set(allowed)
        _require(not unknown, f"unsupported query parameters {sorted(unknown)}")

    def _index(self, name: str) -> _Index:
        index = self.indices.get(name)
        if index is None:
            raise _HttpError(404, "index_not_found_exception", f"no such index [{name}]")
        return index

    def _shards(self) -> Json:
        return {"total": 1, "successful": 1 - self.failed_shards, "skipped": 0, "failed": self.failed_shards}

    def _health(self, name: str | None, params: dict[str, str]) -> Json:
        self._only_params(params, ())
        if name is not None:
            self._index(name)
        return {"cluster_name": self.name, "status": self.status, "timed_out": False, "number_of_nodes": 1}

    def _create(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ())
        _only_keys(body, ("settings", "mappings"), "index creation body")
        settings = _only_keys(body.get("settings", {}), ("index",), "settings")
        index_settings = _only_keys(
            settings.get("index", {}),
            ("knn", "number_of_shards", "number_of_replicas", "refresh_interval"),
            "index settings",
        )
        mappings = _only_keys(body.get("mappings", {}), ("dynamic", "_meta", "properties"), "mappings")
        for field_name, spec in mappings.get("properties", {}).items():
            kind = spec.get("type")
            if kind == "keyword":
                _only_keys(spec, ("type",), f"field {field_name}")
            elif kind == "knn_vector":
                self._check_vector_field(field_name, spec, index_settings)
            else:
                raise UnsupportedRequest(f"field {field_name} has a type the fake does not support: {kind}")
        if name in self.indices:
            raise _HttpError(400, "resource_already_exists_exception", f"index [{name}] already exists")
        self.indices[name] = _Index(settings, mappings)
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    @staticmethod
    def _check_vector_field(field_name: str, spec: Json, index_settings: Json) -> None:
        _only_keys(spec, ("type", "dimension", "method"), f"field {field_name}")
        _require(index_settings.get("knn") is True, "a knn_vector field needs index.knn: true")
        dimension = spec.get("dimension")
        _require(isinstance(dimension, int) and 1 <= dimension <= 16_000, f"bad dimension {dimension!r}")
        method = _only_keys(spec.get("method"), ("name", "engine", "space_type", "parameters"), "method")
        _require(method.get("name") == "hnsw", f"unsupported method {method.get('name')!r}")
        _require(method.get("engine") in ("lucene", "faiss"), f"unsupported engine {method.get('engine')!r}")
        _require(method.get("space_type") in SCORERS, f"unsupported space {method.get('space_type')!r}")
        parameters = _only_keys(method.get("parameters", {}), ("m", "ef_construction"), "method parameters")
        _require(all(isinstance(v, int) and v > 0 for v in parameters.values()), "bad HNSW parameters")

    def _mapping(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ())
        _require(body is None, "_mapping takes no body")
        return {name: {"mappings": self._index(name).mappings}}

    def _refresh(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ())
        self._index(name).refresh()
        return {"_shards": self._shards()}

    def _after_write(self, index: _Index, params: dict[str, str]) -> None:
        refresh = params.get("refresh", "false")
        _require(refresh in ("true", "false", "wait_for"), f"bad refresh value {refresh!r}")
        if refresh != "false":
            index.refresh()

    def _bulk(self, params: dict[str, str], body: Any, default_index: str | None = None) -> Json:
        self._only_params(params, ("refresh",))
        _require(isinstance(body, list) and len(body) > 0, "_bulk needs NDJSON lines")
        items: list[Json] = []
        touched: dict[str, _Index] = {}
        lines = iter(body)
        for line in lines:
            [(op, meta)] = _only_keys(line, ("index", "delete"), "bulk action").items()
            _only_keys(meta, ("_index", "_id"), "bulk action metadata")
            name = meta.get("_index", default_index)
            _require(name in self.indices, f"bulk write to missing index {name!r} would auto-create it")
            _require(isinstance(meta.get("_id"), str), "bulk actions must name their document id")
            index = touched.setdefault(name, self.indices[name])
            doc_id = meta["_id"]
            if op == "delete":
                found = index.docs.pop(doc_id, None) is not None
                result = {"status": 200 if found else 404, "result": "deleted" if found else "not_found"}
            else:
                result = self._put_doc(index, doc_id, next(lines))
            items.append({op: {"_index": name, "_id": doc_id, **result}})
        for index in touched.values():
            self._after_write(index, params)
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return {"took": 1, "errors": errors, "items": items}

    @staticmethod
    def _put_doc(index: _Index, doc_id: str, source: Json) -> Json:
        properties = index.properties
        unknown = set(source) - set(properties)
        if unknown and index.mappings.get("dynamic") == "strict":
            reason = f"mapping set to strict, dynamic introduction of {sorted(unknown)} is not allowed"
            return {"status": 400, "error": {"type": "strict_dynamic_mapping_exception", "reason": reason}}
        _require(not unknown, f"fields {sorted(unknown)} would be mapped dynamically")
        for name, value in source.items():
            spec = properties[name]
            if spec["type"] == "knn_vector":
                ok = isinstance(value, list) and len(value) == spec["dimension"]
                ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
            else:
                ok = isinstance(value, str | int) and not isinstance(value, bool)
            if not ok:
                reason = f"failed to parse field [{name}] of type [{spec['type']}]"
                return {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": reason}}
        created = doc_id not in index.docs
        index.docs[doc_id] = source
        return {"status": 201, "result": "created"} if created else {"status": 200, "result": "updated"}

    def _count(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ())
        _require(body is None, "the fake counts every document only")
        return {"count": len(self._index(name).visible), "_shards": self._shards()}

    def _delete_by_query(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ("refresh", "conflicts"))
        index = self._index(name)
        query = _only_keys(body, ("query",), "_delete_by_query body")["query"]
        match = self._clause_matcher(_only_keys(query, ("terms",), "query"), index)
        doomed = [doc_id for doc_id, doc in index.visible.items() if match(doc)]
        for doc_id in doomed:
            index.docs.pop(doc_id, None)
        if params.get("refresh", "false") != "false":
            _require(params["refresh"] == "true", "_delete_by_query takes refresh=true only")
            index.refresh()
        deleted = len(doomed)
        return {"took": 1, "timed_out": False, "total": deleted, "deleted": deleted, "failures": []}

    def _mget(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ("_source",))
        _require(params.get("_source") == "false", "the fake answers _mget without _source only")
        ids = _only_keys(body, ("ids",), "_mget body")["ids"]
        index = self._index(name)
        return {"docs": [{"_index": name, "_id": i, "found": i in index.docs} for i in ids]}

    def _search(self, name: str, params: dict[str, str], body: Any) -> Json:
        """Only the id scan: every document by face id, no source, paged with search_after."""
        self._only_params(params, ())
        _only_keys(body, ("size", "_source", "sort", "search_after"), "_search body")
        _require(body.get("_source") is False, "the fake scans ids without _source only")
        [[sort_field, order]] = [next(iter(s.items())) for s in body.get("sort", [])] or [[None, None]]
        _require(order == "asc", f"unsupported sort {body.get('sort')!r}")
        index = self._index(name)
        _require(index.properties.get(sort_field, {}).get("type") == "keyword", "sort on a keyword field")
        size = body.get("size", 10)
        _require(isinstance(size, int) and 0 <= size <= MAX_WINDOW, f"bad size {size!r}")
        keyed = sorted((str(doc[sort_field]), doc_id) for doc_id, doc in index.visible.items())
        if "search_after" in body:
            [after] = body["search_after"]
            keyed = [pair for pair in keyed if pair[0] > after]
        hits = [{"_index": name, "_id": i, "_score": None, "sort": [key]} for key, i in keyed[:size]]
        return {"took": 1, "timed_out": False, "_shards": self._shards(), "hits": {"hits": hits}}

    def _msearch(self, name: str, params: dict[str, str], body: Any) -> Json:
        self._only_params(params, ())
        _require(
            isinstance(body, list) and len(body) > 0 and len(body) % 2 == 0,
            "_msearch needs header/body pairs",
        )
        responses = []
        for header, search in zip(body[::2], body[1::2], strict=True):
            _require(header == {}, f"the fake takes the index from the path only, got header {header!r}")
            try:
                responses.append(self._knn_search(name, search) | {"status": 200})
            except _HttpError as error:
                responses.append(error.body)
        return {"took": 1, "responses": responses}

    def _knn_search(self, name: str, body: Any) -> Json:
        _only_keys(body, ("size", "_source", "query"), "search body")
        index = self._index(name)
        size = body.get("size", 10)
        _require(isinstance(size, int) and 0 <= size <= MAX_WINDOW, f"bad size {size!r}")
        query = _only_keys(body.get("query"), ("knn",), "query")
        [(field_name, knn)] = _only_keys(query["knn"], index.properties, "knn clause").items()
        spec = index.properties[field_name]
        _require(spec["type"] == "knn_vector", f"knn on {field_name}, not a knn_vector field")
        _only_keys(knn, ("vector", "k", "filter"), f"knn query on {field_name}")
        k = knn.get("k")
        _require(isinstance(k, int) and 1 <= k <= MAX_WINDOW, f"bad k {k!r}")
        vector = knn.get("vector")
        if not isinstance(vector, list) or len(vector) != spec["dimension"]:
            raise _HttpError(400, "illegal_argument_exception", "query vector has the wrong dimension")
        docs = list(index.visible.items())
        selected = np.ones(len(docs), bool)
        if "filter" in knn:
            match = self._clause_matcher(knn["filter"], index)
            selected = np.fromiter((match(doc) for _, doc in docs), bool, len(docs))
        scores = np.full(len(docs), -np.inf, np.float32)
        if docs:
            scorer = SCORERS[spec["method"]["space_type"]]
            scores[selected] = scorer(np.asarray(vector, np.float32), index.vectors(field_name)[selected])
        # The k nearest among the filtered documents (ties by index order), then the top `size`.
        order = [int(i) for i in np.argsort(-scores, kind="stable")[: min(k, int(selected.sum()))]][:size]
        hits = [self._hit(name, *docs[i], scores[i], body.get("_source", True)) for i in order]
        if self.failed_shards:
            hits = []
        return {
            "took": 1,
            "timed_out": False,
            "_shards": self._shards(),
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": hits[0]["_score"] if hits else None,
                "hits": hits,
            },
        }

    @staticmethod
    def _hit(name: str, doc_id: str, doc: Json, score: np.float32, source: Any) -> Json:
        hit: Json = {"_index": name, "_id": doc_id, "_score": _rendered(score)}
        if source is True:
            hit["_source"] = doc
        elif isinstance(source, list):
            hit["_source"] = {key: doc[key] for key in source if key in doc}
        else:
            _require(source is False, f"unsupported _source {source!r}")
        return hit

    def _clause_matcher(self, clause: Any, index: _Index) -> Callable[[Json], bool]:
        """term / terms on keyword fields, and bool filter/must lists of those."""
        [(kind, spec)] = _only_keys(clause, ("term", "terms", "bool"), "filter clause").items()
        if kind == "bool":
            parts = _only_keys(spec, ("filter", "must"), "bool clause")
            matchers = [
                self._clause_matcher(sub, index)
                for key in ("filter", "must")
                for sub in (parts.get(key, []) if isinstance(parts.get(key, []), list) else [parts[key]])
            ]
            return lambda doc: all(m(doc) for m in matchers)
        [(field_name, wanted)] = spec.items()
        _require(index.properties.get(field_name, {}).get("type") == "keyword", f"{kind} on {field_name}")
        if kind == "term":
            _require(not isinstance(wanted, list | dict), f"term takes one value, got {wanted!r}")
            values = {str(wanted)}
        else:
            _require(isinstance(wanted, list), f"terms takes a list, got {wanted!r}")
            values = {str(value) for value in wanted}
        return lambda doc: field_name in doc and str(doc[field_name]) in values


class FakeConnection(Connection):
    """Answers from ``cluster`` instead of a socket; the rest of opensearch-py runs as usual."""

    cluster: FakeCluster

    def perform_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        ignore: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        decoded = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (params or {}).items()}
        status, payload = self.cluster.handle(method, url, decoded, parse_body(url, body))
        raw = json.dumps(payload)
        if not 200 <= status < 300 and status not in ignore:
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json"}, raw

    def close(self) -> None:
        pass


def parse_body(url: str, body: bytes | None) -> Any:
    if body is None:
        return None
    text = body.decode("utf-8")
    if url.endswith(("/_bulk", "/_msearch")):
        _require(text.endswith("\n"), "NDJSON bodies end with a newline")
        return [json.loads(line) for line in text.splitlines() if line]
    return json.loads(text)
