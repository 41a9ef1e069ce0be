-- An event is stored once per (session, seq). A ticker taking a shard over
-- re-publishes each session's latest event; the events stream drops the copy
-- only within its 120 s duplicate window, so an idle session's latest event
-- could be stored twice under two stream sequences. From now on the copy is a
-- dead letter (reason "duplicate: ..."), so every stream message is still
-- accounted for; copies stored before are removed, keeping the first.
DELETE FROM events e
USING events d
WHERE e.kind = 'event' AND d.kind = 'event'
  AND e.session_id = d.session_id AND e.seq = d.seq
  AND (e.stream, e.stream_seq) > (d.stream, d.stream_seq);

CREATE UNIQUE INDEX events_once ON events (session_id, seq) WHERE kind = 'event';
