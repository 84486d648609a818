"""The OpenSearch k-NN backend: the same FaceIndex, served by a cluster (needs opensearch-py).

``cluster`` is the client with its retries and error translation, ``mapping`` the index and its
documents, ``queries`` the search request and its answer, ``index`` the ``OpenSearchIndex``.
"""

from search_service.index.opensearch.index import OpenSearchIndex

__all__ = ["OpenSearchIndex"]
