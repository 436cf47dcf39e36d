-- Fields that hold tables (issue 21). Where each element of an array cell was read: one
-- `{source_text, provenance?}` per element, as JSON (`domain::cells::RowSource`); NULL for
-- every other cell. And an array field's sub-fields in the Field Registry, as JSON
-- (`domain::schema::FieldDef` list); NULL for every other field.
ALTER TABLE cells ADD COLUMN rows TEXT;
ALTER TABLE registry_fields ADD COLUMN items TEXT;
