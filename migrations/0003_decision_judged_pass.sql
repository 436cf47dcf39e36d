-- The (generation, pass) of the document's first run after a decision: replay tells a verdict
-- judged before a decision from one judged after by this order, not by millisecond times.
ALTER TABLE review_decisions ADD COLUMN judged_generation INTEGER;
ALTER TABLE review_decisions ADD COLUMN judged_pass INTEGER;
