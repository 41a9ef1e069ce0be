-- Events leave the members out too unless they changed them or the leader
-- (docs/protocol.md): that event carries them here, and every state names the
-- revision it refers to (`members_rev`: that event's seq).
ALTER TABLE events ADD COLUMN members json;
ALTER TABLE events ALTER COLUMN members SET COMPRESSION lz4;
CREATE INDEX events_members ON events (session_id, seq) WHERE members IS NOT NULL;

-- The members a state refers to: inside it (events logged before migration 7),
-- else the ones carried by the event that changed them.
CREATE FUNCTION bandsync_members(of_session text, of_state jsonb) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        CASE WHEN jsonb_array_length(coalesce(of_state -> 'members', '[]')) > 0 THEN of_state -> 'members' END,
        (SELECT e.members::jsonb FROM events e
         WHERE e.session_id = of_session AND e.seq = (of_state ->> 'members_rev')::bigint
           AND e.members IS NOT NULL
         LIMIT 1),
        '[]'::jsonb)
    $$;

-- An event row as the message that was published.
CREATE FUNCTION bandsync_message(payload jsonb, state json, members json, setlist json) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN bandsync_message(payload, state, setlist)
        || CASE WHEN members IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('members', members::jsonb) END;

-- Re-expanded so the new column is part of it (appended, as a view allows).
CREATE OR REPLACE VIEW applied_events AS
SELECT DISTINCT ON (session_id, seq) *
FROM events
WHERE kind = 'event'
ORDER BY session_id, seq, epoch DESC, stream_seq;
