-- A refresh pair's success on a target that only accepts purges (a CDN without a completion to
-- poll) is unconfirmed: 0. 1 when the target confirmed it; NULL for other pairs.
ALTER TABLE task_pairs ADD COLUMN confirmed INTEGER;
