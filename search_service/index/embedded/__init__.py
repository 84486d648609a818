"""The embedded backend: faces in memory, exact search for small sets, a faiss HNSW graph above.

``columns`` holds the face table, ``exact`` the exact search, ``graph`` the HNSW graph and its
file, ``index`` the ``EmbeddedIndex`` that ties them to the ``FaceIndex`` interface.
"""

from search_service.index.embedded.index import EmbeddedIndex

__all__ = ["EmbeddedIndex"]
