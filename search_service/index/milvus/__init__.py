"""The Milvus backend: the same FaceIndex, served by Milvus or Milvus Lite (needs pymilvus).

``server`` is the client with its retries and error translation, ``schema`` the collection's
layout and rows, ``collection`` the requests about the collection, ``queries`` the filter
expressions, the search request and its answer, ``index`` the ``MilvusIndex``.
"""

from search_service.index.milvus.index import MilvusIndex

__all__ = ["MilvusIndex"]
