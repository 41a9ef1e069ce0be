-- Where the music stopped: every pause and stop, with the beat and bar it
-- happened on and the song. A pause carries its beat; a stop returns the
-- timeline to beat 0, so its beat is read from the segment it ended (the one
-- before last in the state, still kept because a stop is scheduled ahead).
CREATE VIEW session_stops AS
SELECT x.session_id, x.seq, x.kind, x.stopped_by, x.at, x.song, x.beat,
       (x.seg ->> 'bar_origin_number')::bigint
         + floor((x.beat - (x.seg ->> 'bar_origin_beat')::float8 + 1e-6) / (x.seg ->> 'beats_per_bar')::int)::bigint
         AS bar
FROM (
    SELECT c.session_id, c.seq, c.kind, c.actor AS stopped_by,
           bandsync_ts((c.change ->> 'at')::bigint) AS at,
           c.state -> 'setlist' -> ((c.state ->> 'song')::int) ->> 'title' AS song,
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

-- The summary gains where the session last stopped (columns appended, as a view allows).
CREATE OR REPLACE VIEW session_summary AS
SELECT s.session_id, s.code, s.created_at,
       coalesce(s.ended_at, s.last_event_at) AS last_activity_at,
       coalesce(s.ended_at, s.last_event_at) - s.created_at AS duration,
       s.ended_at, s.end_reason,
       m.members, m.member_names, m.leaders,
       coalesce(sp.songs_played, '{}') AS songs_played,
       tt.tempo_changes, r.rejected_commands,
       s.last_seq AS changes_applied,
       s.song AS last_song, s.bar AS last_bar, s.position_beat AS last_beat,
       s.playing, s.tempo_bpm AS last_tempo_bpm,
       st.song AS stopped_in_song, st.bar AS stopped_at_bar, st.at AS stopped_at
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
) r ON true
LEFT JOIN LATERAL (
    SELECT song, bar, at FROM session_stops
    WHERE session_stops.session_id = s.session_id ORDER BY seq DESC LIMIT 1
) st ON true;

-- A rejection carries no time of its own; the command's send time says when it was asked.
CREATE OR REPLACE VIEW rejected_commands AS
SELECT e.session_id, e.occurred_at AS rejected_at, e.actor AS member_id, e.error_code,
       e.payload ->> 'message' AS message, c.kind AS command, c.payload -> 'command' AS command_body,
       c.sent_at
FROM events e
LEFT JOIN commands c ON c.cmd_id = e.cmd_id AND c.session_id = e.session_id
WHERE e.kind = 'rejected';
