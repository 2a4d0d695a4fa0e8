-- 0002_naming.sql: the naming model (services, instances) and what
-- namespaces need for it. Owned by the naming worker (workers/naming), the
-- only writer of these tables; the mapping from Polaris, Eureka, Nacos and
-- Apollo fields to these columns is in ARCHITECTURE.md, "Naming model".
--
-- Change tracking, the same on all three tables:
--   row_version  a fresh value of the sequence lodestar_naming_version on
--                every write. A node applies a row only when its row_version
--                is higher than the one it holds, so reading a row twice is
--                harmless. The sequence also numbers the worker's change
--                stream (NamingChange.seq), which therefore never goes back,
--                not even across restarts.
--   txid         pg_current_xact_id() of the writing transaction. Nodes poll
--                for rows with txid >= the xmin of their previous poll's
--                snapshot: a transaction still running at one poll (txid at
--                least that xmin) is read by a later poll once it committed.
-- Rows are soft-deleted (deleted = true, mtime = when) so that other nodes
-- see the deletion; the naming worker hard-deletes them after
-- workers.naming.deleted_retention_s.
-- Revisions of instances and services are SHA-1 digests of their content,
-- computed in memory (common/naming_id.h), not stored; the namespace row
-- keeps its digest in revision.

CREATE SEQUENCE lodestar_naming_version;

ALTER TABLE lodestar_namespace
    ADD COLUMN metadata    jsonb  NOT NULL DEFAULT '{}',
    ADD COLUMN row_version bigint NOT NULL DEFAULT nextval('lodestar_naming_version'),
    ADD COLUMN txid        xid8   NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX lodestar_namespace_txid ON lodestar_namespace (txid);

-- Services (Polaris "service"; Eureka application, Nacos service within a
-- group map onto it). Keyed by namespace and name, like Polaris.
CREATE TABLE lodestar_service (
    namespace   text    NOT NULL,
    name        text    NOT NULL,
    id          text    NOT NULL,              -- 32 hex, random at creation
    metadata    jsonb   NOT NULL DEFAULT '{}',
    ports       text    NOT NULL DEFAULT '',
    business    text    NOT NULL DEFAULT '',
    department  text    NOT NULL DEFAULT '',
    cmdb_mod1   text    NOT NULL DEFAULT '',
    cmdb_mod2   text    NOT NULL DEFAULT '',
    cmdb_mod3   text    NOT NULL DEFAULT '',
    comment     text    NOT NULL DEFAULT '',
    owners      text    NOT NULL DEFAULT '',
    token       text    NOT NULL DEFAULT '',   -- 32 hex, random at creation
    platform_id text    NOT NULL DEFAULT '',
    ctime       timestamptz NOT NULL DEFAULT now(),
    mtime       timestamptz NOT NULL DEFAULT now(),
    deleted     boolean NOT NULL DEFAULT false,
    row_version bigint  NOT NULL DEFAULT nextval('lodestar_naming_version'),
    txid        xid8    NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (namespace, name)
);
CREATE INDEX lodestar_service_txid ON lodestar_service (txid);
CREATE INDEX lodestar_service_deleted ON lodestar_service (mtime) WHERE deleted;

-- Instances: every field of a Polaris v1.Instance plus lodestar.InstanceExt
-- (what Eureka and Nacos clients need). The id is the identity (as in
-- Polaris, whose instance table has no unique address either).
CREATE TABLE lodestar_instance (
    id                  text    PRIMARY KEY,
    namespace           text    NOT NULL,
    service             text    NOT NULL,
    vpc_id              text    NOT NULL DEFAULT '',
    host                text    NOT NULL,
    port                integer NOT NULL,
    protocol            text    NOT NULL DEFAULT '',
    version             text    NOT NULL DEFAULT '',
    priority            bigint  NOT NULL DEFAULT 0,
    weight              integer NOT NULL DEFAULT 100,
    hc_type             smallint NOT NULL DEFAULT -1,  -- -1 none, 0 UNKNOWN, 1 HEARTBEAT
    hc_ttl              integer NOT NULL DEFAULT 0,    -- seconds
    enable_health_check boolean NOT NULL DEFAULT false,
    healthy             boolean NOT NULL DEFAULT true,
    isolate             boolean NOT NULL DEFAULT false,
    region              text    NOT NULL DEFAULT '',
    zone                text    NOT NULL DEFAULT '',
    campus              text    NOT NULL DEFAULT '',
    metadata            jsonb   NOT NULL DEFAULT '{}',
    logic_set           text    NOT NULL DEFAULT '',
    nacos_group         text    NOT NULL DEFAULT '',
    nacos_cluster       text    NOT NULL DEFAULT '',
    ephemeral           boolean NOT NULL DEFAULT false,
    eureka_app          text    NOT NULL DEFAULT '',
    eureka_status       text    NOT NULL DEFAULT '',
    eureka_overridden_status text NOT NULL DEFAULT '',
    eureka_last_dirty_ms bigint NOT NULL DEFAULT 0,
    origin              text    NOT NULL DEFAULT '',
    ctime               timestamptz NOT NULL DEFAULT now(),
    mtime               timestamptz NOT NULL DEFAULT now(),
    deleted             boolean NOT NULL DEFAULT false,
    row_version         bigint  NOT NULL DEFAULT nextval('lodestar_naming_version'),
    txid                xid8    NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX lodestar_instance_txid ON lodestar_instance (txid);
CREATE INDEX lodestar_instance_deleted ON lodestar_instance (mtime) WHERE deleted;
CREATE INDEX lodestar_namespace_deleted ON lodestar_namespace (mtime) WHERE deleted;
