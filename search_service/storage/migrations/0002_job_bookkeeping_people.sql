-- Video ingest: job bookkeeping, and people (tracks grouped) with their merged time ranges.
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- runs started (a restart adds one)
ALTER TABLE jobs ADD COLUMN started_at TEXT;
ALTER TABLE jobs ADD COLUMN finished_at TEXT;
ALTER TABLE jobs ADD COLUMN timings TEXT;  -- JSON: wall seconds per stage of the finished run
ALTER TABLE tracks ADD COLUMN faces INTEGER NOT NULL DEFAULT 0;  -- observations linked into the track

CREATE TABLE people (
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    person INTEGER NOT NULL,
    time_ranges TEXT NOT NULL,  -- JSON [[start_s, end_s], ...]: its tracks' ranges, merged
    thumbnail_track INTEGER REFERENCES tracks (id) ON DELETE SET NULL,  -- its best face
    PRIMARY KEY (media_id, person)
);
