-- Crash accounting: how many consecutive unclean exits a document was in flight for, and the
-- cause a worker recorded before it took the process down. Suspects run alone.
ALTER TABLE pipeline_documents ADD COLUMN unclean_exits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipeline_documents ADD COLUMN abort_cause TEXT;
CREATE INDEX pipeline_documents_suspects ON pipeline_documents(seq) WHERE unclean_exits > 0;
