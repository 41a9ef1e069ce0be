-- Raw log: one row per stream message, idempotent on (stream, stream_seq).
-- Times are timestamptz with microsecond precision; payload is the message as published.

CREATE FUNCTION bandsync_ts(us bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN timestamptz '1970-01-01 00:00:00+00' + us * interval '1 microsecond';

CREATE FUNCTION bandsync_us(t timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (extract(epoch FROM t) * 1000000)::bigint;

CREATE TABLE events (
    stream        text        NOT NULL,
    stream_seq    bigint      NOT NULL,
    session_id    text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('event', 'rejected')),
    changes       text[]      NOT NULL,
    actor         text,
    cmd_id        text,
    seq           bigint,
    epoch         bigint,
    error_code    text,
    occurred_at   timestamptz NOT NULL,
    published_at  timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload       jsonb       NOT NULL,
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX events_session ON events (session_id, stream_seq);
CREATE INDEX events_occurred_brin ON events USING brin (occurred_at);

CREATE TABLE commands (
    stream        text        NOT NULL,
    stream_seq    bigint      NOT NULL,
    cmd_id        text        NOT NULL,
    session_id    text        NOT NULL,
    kind          text        NOT NULL,
    actor         text        NOT NULL,
    gateway       text        NOT NULL,
    sent_at       timestamptz NOT NULL,
    published_at  timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload       jsonb       NOT NULL,
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX commands_session ON commands (session_id, stream_seq);
CREATE INDEX commands_cmd_id ON commands (cmd_id);
CREATE INDEX commands_sent_brin ON commands USING brin (sent_at);

CREATE TABLE dead_letters (
    stream        text        NOT NULL,
    stream_seq    bigint      NOT NULL,
    subject       text        NOT NULL,
    reason        text        NOT NULL,
    payload       bytea       NOT NULL,
    published_at  timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream, stream_seq)
);

-- Folded from events by monotone upserts: order and repetition do not matter.
CREATE TABLE sessions (
    session_id     text        PRIMARY KEY,
    code           text        NOT NULL,
    created_at     timestamptz NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    last_seq       bigint      NOT NULL,
    last_epoch     bigint      NOT NULL,
    song           text,
    playing        boolean     NOT NULL,
    position_beat  double precision NOT NULL,
    bar            bigint      NOT NULL,
    tempo_bpm      double precision NOT NULL,
    ended_at       timestamptz,
    end_reason     text
);
CREATE INDEX sessions_created ON sessions (created_at);

CREATE TABLE members (
    session_id  text        NOT NULL,
    member_id   text        NOT NULL,
    name        text        NOT NULL,
    joined_at   timestamptz NOT NULL,
    has_led     boolean     NOT NULL,
    PRIMARY KEY (session_id, member_id)
);
