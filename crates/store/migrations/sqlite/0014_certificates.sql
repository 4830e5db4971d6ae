-- A domain's TLS certificate for players (issue 14): the chain in PEM, the private key sealed
-- at rest like backends' credentials (src/sealed.rs), and the facts answered back, parsed once at
-- upload. Deleting the domain deletes its row (the store does it; no foreign keys are relied on).
CREATE TABLE domain_certificates (
    domain     TEXT   PRIMARY KEY,
    cert_pem   TEXT   NOT NULL,
    key_sealed TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    -- The leaf's DNS names, a JSON list.
    sans       TEXT   NOT NULL,
    -- Seconds since the epoch.
    not_after  BIGINT NOT NULL,
    -- SHA-256 of the leaf's DER, hex.
    sha256     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
