-- 0004_naming_writer.sql: which naming worker process wrote each naming row.
--
-- writer is a random non-zero number a naming worker draws when it starts
-- (0: written by something else, such as a migration). A worker applies
-- its own commits to its model as they return, so its poll for other
-- nodes' changes (txid >= the previous poll's xmin) skips the rows whose
-- writer is itself instead of reading every one of its own writes back.
-- A row another node overwrites afterwards carries that node's writer and
-- is read as before.
ALTER TABLE lodestar_namespace ADD COLUMN writer bigint NOT NULL DEFAULT 0;
ALTER TABLE lodestar_service ADD COLUMN writer bigint NOT NULL DEFAULT 0;
ALTER TABLE lodestar_instance ADD COLUMN writer bigint NOT NULL DEFAULT 0;
