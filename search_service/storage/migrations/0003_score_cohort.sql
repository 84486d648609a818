-- The cohort that search scores are normalised against (AS-norm): a sample of stored faces. A face
-- deleted from the store leaves the cohort with it (biometric data is not kept behind the user's
-- back); every change bumps score_cohort_version, so searches know when to reload it.
CREATE TABLE score_cohort (
    face_id INTEGER PRIMARY KEY REFERENCES faces (id) ON DELETE CASCADE
);
INSERT INTO meta (key, value) VALUES ('score_cohort_version', '0');
-- Stored faces when the cohort was last drawn or topped up: it is drawn afresh when they double.
INSERT INTO meta (key, value) VALUES ('score_cohort_drawn_at', '0');
CREATE TRIGGER score_cohort_joined AFTER INSERT ON score_cohort BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'score_cohort_version';
END;
CREATE TRIGGER score_cohort_left AFTER DELETE ON score_cohort BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'score_cohort_version';
END
