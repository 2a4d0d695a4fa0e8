-- 0001_base.sql: the base schema every Lodestar domain builds on.
--
-- Migrations are applied by workers/common/store.c, in version order, each
-- inside one transaction the store opens and commits itself (together with
-- the row it writes into lodestar_schema_migrations). So a migration file
-- must not contain BEGIN, COMMIT or ROLLBACK, and once released it is never
-- edited: a change to the schema is a new NNNN_description.sql file.

-- Cluster membership: one row per running Lodestar node. A node inserts
-- its row at start and refreshes heartbeat_at while it runs; rows whose
-- heartbeat is too old belong to nodes that are gone.
CREATE TABLE lodestar_node (
    id           text PRIMARY KEY,   -- stable node identity
    hostname     text,
    pid          int,                -- supervisor pid on that host
    started_at   timestamptz,
    heartbeat_at timestamptz
);

-- Namespaces (Polaris "namespace"; Nacos and Apollo map theirs onto it).
-- Every service and configuration group lives in exactly one namespace.
-- Rows are soft-deleted (deleted = true) so that watchers can see the
-- removal; revision changes on every update so clients can detect it.
CREATE TABLE lodestar_namespace (
    name     text PRIMARY KEY,
    comment  text NOT NULL DEFAULT '',
    owners   text NOT NULL DEFAULT '',         -- comma-separated owner names
    token    text NOT NULL DEFAULT '',         -- access token, '' = none
    ctime    timestamptz NOT NULL DEFAULT now(),
    mtime    timestamptz NOT NULL DEFAULT now(),
    revision text NOT NULL DEFAULT '',
    deleted  boolean NOT NULL DEFAULT false
);

-- The namespace clients use when they name none.
INSERT INTO lodestar_namespace (name) VALUES ('default');
