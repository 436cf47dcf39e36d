-- Rate-limit buckets shared by every node on the database (issue 23), so a client spread over
-- several nodes by a balancer sees one limit: a row per API key (scope 'k') and per
-- organization ('o'), refilled on the database's clock. Unlogged: it is written on every
-- limited request, and after a server crash a bucket simply starts full again. Rows are bounded
-- by the keys and organizations there are; a bucket idle for a minute is full, as if absent.
CREATE UNLOGGED TABLE rate_buckets (
    scope  TEXT COLLATE "C" NOT NULL,
    id     TEXT COLLATE "C" NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    at_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, id)
);

-- One request's charge in one round trip: refills the key's bucket, then the organization's
-- (always in that order, so two calls never wait on each other's rows crosswise), each row
-- locked until the call ends, and with `take` takes a token from both or from neither: a
-- request refused by its organization's bucket must not drain its key's. A limit of 0 leaves
-- that bucket out (its tokens answer NULL). Answers the tokens left after the call. The time
-- since a bucket's last call counts up to a minute (a minute fills any bucket) and never below
-- zero, so neither a long idle spell nor the clock stepping back breaks the arithmetic.
CREATE FUNCTION rate_take(key_id TEXT, key_per_minute BIGINT, org_id TEXT,
                          org_per_minute BIGINT, take BOOLEAN,
                          OUT key_tokens DOUBLE PRECISION, OUT org_tokens DOUBLE PRECISION,
                          OUT allowed BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    IF key_per_minute > 0 THEN
        INSERT INTO rate_buckets AS b (scope, id, tokens, at_ms)
        VALUES ('k', key_id, key_per_minute, now_ms)
        ON CONFLICT (scope, id) DO UPDATE
        SET tokens = least(b.tokens + least(greatest(now_ms - b.at_ms, 0), 60000)::DOUBLE PRECISION
                                      * key_per_minute / 60000.0,
                           key_per_minute),
            at_ms = now_ms
        RETURNING b.tokens INTO key_tokens;
    END IF;
    IF org_per_minute > 0 THEN
        INSERT INTO rate_buckets AS b (scope, id, tokens, at_ms)
        VALUES ('o', org_id, org_per_minute, now_ms)
        ON CONFLICT (scope, id) DO UPDATE
        SET tokens = least(b.tokens + least(greatest(now_ms - b.at_ms, 0), 60000)::DOUBLE PRECISION
                                      * org_per_minute / 60000.0,
                           org_per_minute),
            at_ms = now_ms
        RETURNING b.tokens INTO org_tokens;
    END IF;
    allowed := coalesce(key_tokens >= 1, TRUE) AND coalesce(org_tokens >= 1, TRUE);
    IF allowed AND take THEN
        IF key_tokens IS NOT NULL THEN
            UPDATE rate_buckets SET tokens = tokens - 1 WHERE scope = 'k' AND id = key_id;
            key_tokens := key_tokens - 1;
        END IF;
        IF org_tokens IS NOT NULL THEN
            UPDATE rate_buckets SET tokens = tokens - 1 WHERE scope = 'o' AND id = org_id;
            org_tokens := org_tokens - 1;
        END IF;
    END IF;
END
$$;
