-- Events leave the setlist (charts and all, the bulk of a state) out unless they
-- replaced it (docs/protocol.md): the event that did carries it here, and every
-- state names the revision it refers to (`setlist_rev`: that event's seq).
ALTER TABLE events ADD COLUMN setlist json;
ALTER TABLE events ALTER COLUMN setlist SET COMPRESSION lz4;
CREATE INDEX events_setlists ON events (session_id, seq) WHERE setlist IS NOT NULL;

-- The live song's title is known as of this seq: an event that neither carries
-- the setlist nor picks a song cannot name it, and must not blank it.
ALTER TABLE sessions ADD COLUMN song_seq bigint;
UPDATE sessions SET song_seq = last_seq;

-- The setlist a state refers to: inside it (events logged before this
-- migration), else the one carried by the event that set it.
-- (Parameters are named apart from the columns of `events`, which would win.)
CREATE FUNCTION bandsync_setlist(of_session text, of_state jsonb) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        CASE WHEN jsonb_array_length(coalesce(of_state -> 'setlist', '[]')) > 0 THEN of_state -> 'setlist' END,
        (SELECT e.setlist::jsonb FROM events e
         WHERE e.session_id = of_session AND e.seq = (of_state ->> 'setlist_rev')::bigint
           AND e.setlist IS NOT NULL
         LIMIT 1),
        '[]'::jsonb)
    $$;

-- An event row as the message that was published (payload, state and setlist
-- are stored apart).
CREATE FUNCTION bandsync_message(payload jsonb, state json, setlist json) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN payload
        || CASE WHEN state IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('state', state::jsonb) END
        || CASE WHEN setlist IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('setlist', setlist::jsonb) END;

-- Re-expanded so the new column is part of it (appended, as a view allows).
CREATE OR REPLACE VIEW applied_events AS
SELECT DISTINCT ON (session_id, seq) *
FROM events
WHERE kind = 'event'
ORDER BY session_id, seq, epoch DESC, stream_seq;

-- Gains `setlist`: the setlist in force after the change, whichever event carried it.
CREATE OR REPLACE VIEW session_changes AS
SELECT e.session_id, e.seq, e.epoch, e.occurred_at, e.actor, e.cmd_id,
       c.ord::int AS change_no, c.change ->> 'kind' AS kind, c.change,
       s.state, bandsync_setlist(e.session_id, s.state) AS setlist
FROM applied_events e
CROSS JOIN LATERAL (SELECT coalesce(e.state::jsonb, e.payload -> 'state') AS state) s
CROSS JOIN LATERAL jsonb_array_elements(e.payload -> 'changes') WITH ORDINALITY AS c(change, ord);

CREATE OR REPLACE VIEW session_stops AS
SELECT x.session_id, x.seq, x.kind, x.stopped_by, x.at, x.song, x.beat,
       (x.seg ->> 'bar_origin_number')::bigint
         + floor((x.beat - (x.seg ->> 'bar_origin_beat')::float8 + 1e-6) / (x.seg ->> 'beats_per_bar')::int)::bigint
         AS bar
FROM (
    SELECT c.session_id, c.seq, c.kind, c.actor AS stopped_by,
           bandsync_ts((c.change ->> 'at')::bigint) AS at,
           c.setlist -> ((c.state ->> 'song')::int) ->> 'title' AS song,
           seg.seg,
           CASE
               WHEN c.kind = 'pause' THEN (c.change ->> 'beat')::float8
               WHEN (seg.seg ->> 'playing')::bool THEN
                   (seg.seg ->> 'anchor_beat')::float8
                   + ((c.change ->> 'at')::bigint - (seg.seg ->> 'anchor_time')::bigint)
                     * (seg.seg ->> 'tempo_bpm')::float8 / 60e6
               ELSE (seg.seg ->> 'anchor_beat')::float8
           END AS beat
    FROM session_changes c
    CROSS JOIN LATERAL (
        SELECT coalesce(
                   CASE WHEN c.kind = 'stop' THEN c.state -> 'timeline' -> 'segments' -> -2 END,
                   c.state -> 'timeline' -> 'segments' -> -1) AS seg
    ) seg
    WHERE c.kind IN ('pause', 'stop')
) x;
