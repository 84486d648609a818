"""Embedder service: image bytes in, faces (box, score, landmarks, embedding) out."""
