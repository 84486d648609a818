"""``make bench``: speed of every component, against reference implementations measured in the same run.

Modules by component: :mod:`.embedder` (MTCNN, embedding, whole pipeline; dlib, face_recognition and
facenet-pytorch as baselines), :mod:`.index` over :mod:`.gallery` (vector search from 1k to 1M faces,
with :mod:`.recall`), :mod:`.services` (bulk ingest and ``POST /search`` over HTTP), :mod:`.video`;
:mod:`.timing` and :mod:`.report` are shared by all of them, :mod:`.readme` puts the last results
into the README.

This file must stay free of imports: :mod:`.reference_mtcnn` runs in a separate venv with torch.
"""
