-- Where an extracted value stands in a binary document's text layer: page, character span and
-- box, as JSON (`domain::cells::Provenance`); NULL for the text formats and for values no
-- extraction read.
ALTER TABLE cells ADD COLUMN provenance TEXT;
