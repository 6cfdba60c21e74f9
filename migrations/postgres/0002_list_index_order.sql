-- Listing pages by `ORDER BY created_at DESC, uid DESC` with a `(created_at, uid) < (..)`
-- keyset: the indexes must have uid in the same direction so a page is one index range.
DROP INDEX workflows_ns_created;
DROP INDEX workflows_ns_phase_created;
DROP INDEX workflows_created;
CREATE INDEX workflows_ns_created ON workflows (namespace, created_at DESC, uid DESC);
CREATE INDEX workflows_ns_phase_created ON workflows (namespace, phase, created_at DESC, uid DESC);
CREATE INDEX workflows_created ON workflows (created_at DESC, uid DESC);
