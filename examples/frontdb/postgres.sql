-- Front-end database (前置库) tables for PostgreSQL, as govex reads and writes them.
-- A department's DBA runs this once; govex's user needs SELECT on the source tables and
-- INSERT on the reject tables (and INSERT, UPDATE on the down-tables).

-- 1. A source table: housing's system writes its contract filings here. `id` and `updated_at`
--    are what govex finds new rows by (mode "timestamp+incrementing"); a row changed in place
--    must get a new updated_at. The index keeps each poll cheap.
--    clock_timestamp(), not now(): now() is the time the *transaction* began, so a long
--    transaction would write a time older than rows committed before it, and govex's
--    commit-delay guard (commit_lag_ms) protects only rows whose time is when they were written.
CREATE TABLE contract_filing_out (
    id                 BIGSERIAL PRIMARY KEY,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    filing_no          TEXT NOT NULL,
    contract_no        TEXT,
    project_name       TEXT,
    building           TEXT,
    unit_no            TEXT,
    room               TEXT,
    unit_number        TEXT NOT NULL,        -- 不动产单元号
    buyer_id_type      TEXT,
    buyer_id_number    TEXT,
    buyer_name         TEXT,
    seller_credit_code TEXT,
    total_price        NUMERIC(14, 2),
    area_m2            NUMERIC(10, 2),
    filed_at           TIMESTAMPTZ,
    status             TEXT,
    division           TEXT
);
CREATE INDEX contract_filing_out_poll ON contract_filing_out (updated_at, id);
-- A trigger keeps updated_at honest when the system updates a row in place.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER contract_filing_out_touch BEFORE UPDATE ON contract_filing_out
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- 2. Its reject table: rows govex refused, with the rules they broke (never their values).
--    Fix the row (its updated_at moves on) and it is read again.
CREATE TABLE contract_filing_rejects (
    source      TEXT NOT NULL,
    row_key     TEXT NOT NULL,               -- the source row's key (id)
    version     TEXT NOT NULL,               -- updated_at|id of the version refused
    violations  TEXT NOT NULL,               -- JSON: [{"pointer","rule","message"}]
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, row_key, version)
);

-- 3. A down-table: what the land registry receives of housing's contract filings. govex keeps
--    natural_key, event_id, version and received_at; the other columns are the table's mapping.
CREATE TABLE contract_filing_in (
    natural_key     TEXT PRIMARY KEY,        -- the record's key (the property unit)
    event_id        TEXT NOT NULL,
    version         BIGINT NOT NULL,         -- event time in ms: a newer one replaces an older
    received_at     TIMESTAMPTZ NOT NULL,
    filing_no       TEXT,
    buyer_name      TEXT,
    buyer_id_number TEXT,
    total_price     TEXT
);
