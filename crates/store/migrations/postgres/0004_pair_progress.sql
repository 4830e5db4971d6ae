-- Byte-level progress of a prefetch pair in flight: the object's size when the origin said.
ALTER TABLE task_pairs ADD COLUMN expected_bytes BIGINT;
