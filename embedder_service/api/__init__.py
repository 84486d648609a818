"""HTTP routes of the embedder."""
