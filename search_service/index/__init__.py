"""Vector index backends behind one interface (``base.FaceIndex``), chosen by ``registry``."""

from search_service.index.registry import create_index

__all__ = ["create_index"]
