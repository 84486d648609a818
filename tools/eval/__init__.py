"""``make eval``: LFW verification and retrieval accuracy of our pipeline variants and of the peer.

Modules by concept: :mod:`.pairs` (LFW protocol files), :mod:`.metrics` (verification and
retrieval numbers), :mod:`.embedding` (our pipeline per variant, cached), :mod:`.peer`
(``face_recognition``), :mod:`.rerank` (re-ranking of the top hits), :mod:`.retrieval`
(the gallery protocol), :mod:`.runner` (both protocols over one pipeline's embeddings) and
:mod:`.report` (tables, JSON, plots).
"""
