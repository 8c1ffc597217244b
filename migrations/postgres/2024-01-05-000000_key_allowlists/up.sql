-- The addresses a key may be used from: normalised blocks separated by spaces, or NULL
-- (anywhere).
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT;
