-- Front-end database (前置库) tables for MySQL 8 / MariaDB 10.6+, as govex reads and writes
-- them. utf8mb4 throughout: names are Chinese.

-- 1. A source table: tax's system appends its deed-tax payments (mode "incrementing"; add an
--    updated_at column and use "timestamp+incrementing" if rows are changed in place).
CREATE TABLE deed_tax_out (
    id                 BIGINT AUTO_INCREMENT PRIMARY KEY,
    created_at         DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),  -- for the commit-delay guard
    voucher_no         VARCHAR(40) NOT NULL,
    taxpayer_id_type   VARCHAR(20),
    taxpayer_id_number VARCHAR(18),
    taxpayer_name      VARCHAR(50),
    unit_number        VARCHAR(28) NOT NULL,
    taxable_base       DECIMAL(14, 2),
    tax_rate           DECIMAL(6, 4),
    tax_amount         DECIMAL(14, 2),
    paid_at            DATETIME,                 -- local time (the node's time_zone)
    tax_authority      VARCHAR(18),
    division           VARCHAR(6)
) CHARACTER SET utf8mb4;

-- 2. Its reject table.
CREATE TABLE deed_tax_rejects (
    source      VARCHAR(64) NOT NULL,
    row_key     VARCHAR(255) NOT NULL,
    version     VARCHAR(100) NOT NULL,
    violations  TEXT NOT NULL,
    rejected_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (source, row_key, version)
) CHARACTER SET utf8mb4;

-- 3. A down-table: licences coming down from the city (revocations included).
CREATE TABLE licence_in (
    natural_key  VARCHAR(120) PRIMARY KEY,        -- the licence identifier
    event_id     VARCHAR(36) NOT NULL,
    version      BIGINT NOT NULL,
    received_at  DATETIME(6) NOT NULL,
    licence_no   VARCHAR(100),
    status       VARCHAR(20),
    holder_name  VARCHAR(50)
) CHARACTER SET utf8mb4;
