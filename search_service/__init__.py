"""Search service: owns all state (photos, faces, vectors, jobs) and answers the public API."""
