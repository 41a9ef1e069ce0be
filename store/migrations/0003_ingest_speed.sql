-- Ingest speed, measured with docs/benchmarks.md's example:
-- 1. The time conversions are STABLE, as timestamptz arithmetic is: PostgreSQL
--    only inlines an SQL function whose body is no more volatile than declared,
--    and inlined they cost a sixth as much per row.
CREATE OR REPLACE FUNCTION bandsync_ts(us bigint) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN timestamptz '1970-01-01 00:00:00+00' + us * interval '1 microsecond';

CREATE OR REPLACE FUNCTION bandsync_us(t timestamptz) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (extract(epoch FROM t) * 1000000)::bigint;

-- 2. Event payloads carry the whole session state (2-3 kB with a setlist), so most
--    are compressed on insert: lz4 costs a fraction of the default pglz.
ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
ALTER TABLE commands ALTER COLUMN payload SET COMPRESSION lz4;
