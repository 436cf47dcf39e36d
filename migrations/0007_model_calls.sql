-- Model extraction. A document whose run needs a model's answer waits in the queue (status
-- 'queued', `waiting_for` saying why) while the dispatcher calls the model, and is claimed again
-- once the answer is kept.
ALTER TABLE pipeline_documents ADD COLUMN waiting_for TEXT;

-- Answers by content: key = sha256(document, model, prompt version, answer schema). A failed
-- call's row (`error`) serves only the run that asked (`pd_seq`, `generation`).
CREATE TABLE model_responses (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    answer     TEXT,
    error      TEXT,
    pd_seq     INTEGER,
    generation INTEGER,
    created_at TEXT NOT NULL
);

-- Every HTTP call to a model, per document (never the API key).
CREATE TABLE model_calls (
    seq        INTEGER PRIMARY KEY,
    pd_seq     INTEGER NOT NULL REFERENCES pipeline_documents(seq),
    model      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    status     INTEGER,
    tokens_in  INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    ms         INTEGER NOT NULL,
    cost       REAL NOT NULL,
    error      TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX model_calls_document ON model_calls(pd_seq, seq);

-- A rerun that asked to read its documents again (`refresh_extraction`): its runs do not take
-- kept answers.
ALTER TABLE reruns ADD COLUMN refresh_extraction INTEGER NOT NULL DEFAULT 0;

-- Calls, tokens and estimated cost per run, kept up to date with each document's calls, so
-- progress and results read one row.
CREATE TABLE model_usage (
    pipeline_id TEXT PRIMARY KEY REFERENCES pipelines(id),
    calls       INTEGER NOT NULL,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    cost        REAL NOT NULL
);
