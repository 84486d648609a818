-- Photos and videos (media), their faces with embeddings, video tracks and ingest jobs.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE media (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids of deleted media are never reused
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    collection TEXT NOT NULL,
    external_id TEXT,
    sha256 TEXT NOT NULL,
    filename TEXT,
    content_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    duration_s REAL,  -- videos
    fps REAL,  -- videos
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (kind, collection, sha256)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_external_id ON media (external_id);

-- Background ingest of a video; kept here so that a restart resumes or re-queues it.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    frames_processed INTEGER NOT NULL DEFAULT 0,
    faces_found INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_media ON jobs (media_id);

-- One person's continuous appearance in a video; tracks of one person share `person`.
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    person INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL CHECK (end_s >= start_s),
    best_time_s REAL NOT NULL,  -- the frame of the thumbnail face
    thumbnail_sha256 TEXT,  -- a file in the blob store
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL  -- face box at best_time_s
);
CREATE INDEX tracks_media ON tracks (media_id, person);

CREATE TABLE faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    track_id INTEGER REFERENCES tracks (id) ON DELETE CASCADE,  -- videos: a representative vector
    -- Copies of media.kind and media.collection: loading an index then needs no join.
    source TEXT NOT NULL CHECK (source IN ('image', 'video')),
    collection TEXT NOT NULL,
    time_s REAL,  -- videos: the frame the vector comes from
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    landmarks TEXT,  -- JSON [[x, y] x 5]
    embedding BLOB NOT NULL  -- float32, L2-normalised
);
CREATE INDEX faces_media ON faces (media_id);
CREATE INDEX faces_track ON faces (track_id);
