-- Field states in a plain state (progressing or completed at a phase, nothing else) are now
-- stored as a short string ("c5") instead of an object (`store::states`). The flag trigger
-- looked inside every field's value as an object; a string is not one, so it now looks only
-- inside objects. Rows already stored keep their objects and read as before.
DROP TRIGGER pipeline_docs_flag_phase;
CREATE TRIGGER pipeline_docs_flag_phase AFTER UPDATE OF field_states ON pipeline_docs
WHEN instr(NEW.field_states, '"flags"') > 0 OR OLD.flag_phase IS NOT NULL BEGIN
    UPDATE pipeline_docs SET flag_phase = (
        SELECT min(json_extract(f.value, '$.phase')) FROM json_each(NEW.field_states) s,
            json_each(CASE s.type WHEN 'object' THEN s.value ELSE '{}' END, '$.flags') f)
    WHERE seq = NEW.seq;
END;
