-- Fields that hold tables (issue 21). Where each element of an array cell was read: one
-- `{source_text, provenance?}` per element, as JSON (`domain::cells::RowSource`); NULL for
-- every other cell. And an array field's sub-fields in the Field Registry, as JSON
-- (`domain::schema::FieldDef` list); NULL for every other field.
ALTER TABLE cells ADD COLUMN rows TEXT;
ALTER TABLE registry_fields ADD COLUMN items TEXT;
-- The element a decision changed (`lines[3].amount`), NULL for a decision on a whole field.
ALTER TABLE review_decisions ADD COLUMN element TEXT;
-- A reviewer's correction of one element pins that element (`element_pins` in a field's
-- state), which every restart keeps like a whole pin: such documents join the sticky ones.
DROP INDEX pipeline_docs_sticky;
CREATE INDEX pipeline_docs_sticky ON pipeline_docs(pipeline_id, seq)
WHERE instr(field_states, '"pinned":true') > 0 OR instr(field_states, '"guards"') > 0
   OR instr(field_states, '"reopened_after"') > 0 OR instr(field_states, '"resumed"') > 0
   OR instr(field_states, '"review_at"') > 0 OR instr(field_states, '"element_pins"') > 0;
