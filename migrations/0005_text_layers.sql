-- Text layers: a PDF, DOCX or image is read into pages at intake. `text` holds the pages'
-- text for extraction (pages apart by a form feed; NULL for the text formats, which are read
-- as they are); `status` is `completed`, or `error` with its reason when this server could not
-- read the document (OCR not installed). `language` and `kind` (invoice, receipt, ...) are told
-- from the text where it can be.
ALTER TABLE documents ADD COLUMN status TEXT NOT NULL DEFAULT 'completed';
ALTER TABLE documents ADD COLUMN error TEXT;
ALTER TABLE documents ADD COLUMN pages INTEGER NOT NULL DEFAULT 1;
ALTER TABLE documents ADD COLUMN language TEXT;
ALTER TABLE documents ADD COLUMN kind TEXT;
ALTER TABLE documents ADD COLUMN text TEXT;
CREATE TABLE document_pages (
    document_seq INTEGER NOT NULL REFERENCES documents(seq),
    number       INTEGER NOT NULL,
    width        REAL NOT NULL,
    height       REAL NOT NULL,
    text         TEXT NOT NULL,
    markdown     TEXT NOT NULL,
    words        TEXT NOT NULL,
    ocr          INTEGER NOT NULL,
    PRIMARY KEY (document_seq, number)
);
-- Rendered page images (PNG), made on first request and kept.
CREATE TABLE document_page_images (
    document_seq INTEGER NOT NULL REFERENCES documents(seq),
    number       INTEGER NOT NULL,
    png          BLOB NOT NULL,
    PRIMARY KEY (document_seq, number)
);
