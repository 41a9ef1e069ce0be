-- Views for analysts. An owner may re-publish an event it is unsure was sent, so the
-- same (session, seq) can appear twice in the log; applied_events keeps one of each.

CREATE VIEW applied_events AS
SELECT DISTINCT ON (session_id, seq) *
FROM events
WHERE kind = 'event'
ORDER BY session_id, seq, epoch DESC, stream_seq;

-- One row per change: an event carries one or more.
CREATE VIEW session_changes AS
SELECT e.session_id, e.seq, e.epoch, e.occurred_at, e.actor, e.cmd_id,
       c.ord::int AS change_no, c.change ->> 'kind' AS kind, c.change,
       e.payload -> 'state' AS state
FROM applied_events e
CROSS JOIN LATERAL jsonb_array_elements(e.payload -> 'changes') WITH ORDINALITY AS c(change, ord);

-- Each time the leader picked a song, until the next pick or the session's end.
CREATE VIEW song_plays AS
SELECT p.session_id, p.seq, p.song_index, p.title, p.chosen_by, p.started_at,
       coalesce(lead(p.started_at) OVER w, s.ended_at, s.last_event_at) AS ended_at,
       p.tempo_bpm, p.beats_per_bar
FROM (
    SELECT session_id, seq, (change ->> 'index')::int AS song_index, change ->> 'title' AS title,
           actor AS chosen_by, bandsync_ts((change ->> 'at')::bigint) AS started_at,
           (state -> 'timeline' -> 'segments' -> -1 ->> 'tempo_bpm')::float8 AS tempo_bpm,
           (state -> 'timeline' -> 'segments' -> -1 ->> 'beats_per_bar')::int AS beats_per_bar
    FROM session_changes
    WHERE kind = 'song'
) p
LEFT JOIN sessions s USING (session_id)
WINDOW w AS (PARTITION BY p.session_id ORDER BY p.seq);

-- Every tempo the session took: its start, explicit changes, and song picks.
CREATE VIEW tempo_timeline AS
SELECT t.*, lag(t.bpm) OVER (PARTITION BY t.session_id ORDER BY t.seq, t.change_no) AS previous_bpm
FROM (
    SELECT session_id, seq, change_no, kind AS source, actor AS changed_by,
           occurred_at AS requested_at,
           coalesce(bandsync_ts((change ->> 'at')::bigint), occurred_at) AS effective_at,
           CASE kind
               WHEN 'tempo' THEN (change ->> 'bpm')::float8
               ELSE (state -> 'timeline' -> 'segments' -> -1 ->> 'tempo_bpm')::float8
           END AS bpm
    FROM session_changes
    WHERE kind IN ('created', 'tempo', 'song')
) t;

-- Commands the owner refused, with the command itself when it was logged.
CREATE VIEW rejected_commands AS
SELECT e.session_id, e.occurred_at AS rejected_at, e.actor AS member_id, e.error_code,
       e.payload ->> 'message' AS message, c.kind AS command, c.payload -> 'command' AS command_body
FROM events e
LEFT JOIN commands c ON c.cmd_id = e.cmd_id AND c.session_id = e.session_id
WHERE e.kind = 'rejected';

-- One line per session: how long, who, what was played, where it stopped.
CREATE VIEW session_summary AS
SELECT s.session_id, s.code, s.created_at,
       coalesce(s.ended_at, s.last_event_at) AS last_activity_at,
       coalesce(s.ended_at, s.last_event_at) - s.created_at AS duration,
       s.ended_at, s.end_reason,
       m.members, m.member_names, m.leaders,
       coalesce(sp.songs_played, '{}') AS songs_played,
       tt.tempo_changes, r.rejected_commands,
       s.last_seq AS changes_applied,
       s.song AS last_song, s.bar AS last_bar, s.position_beat AS last_beat,
       s.playing, s.tempo_bpm AS last_tempo_bpm
FROM sessions s
LEFT JOIN LATERAL (
    SELECT count(*) AS members,
           array_agg(name ORDER BY joined_at) AS member_names,
           coalesce(array_agg(name ORDER BY joined_at) FILTER (WHERE has_led), '{}') AS leaders
    FROM members WHERE members.session_id = s.session_id
) m ON true
LEFT JOIN LATERAL (
    SELECT array_agg(title ORDER BY seq) AS songs_played FROM song_plays WHERE song_plays.session_id = s.session_id
) sp ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS tempo_changes FROM tempo_timeline
    WHERE tempo_timeline.session_id = s.session_id AND source = 'tempo'
) tt ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS rejected_commands FROM events
    WHERE events.session_id = s.session_id AND events.kind = 'rejected'
) r ON true;
