-- 0003_config.sql: the config centre (owned by the config worker): groups,
-- files (drafts), releases and release history.
--
-- Rules this schema keeps:
--  * Every write of the config worker is one call of lodestar_config_write(),
--    a single statement, hence one transaction; the worker acknowledges it
--    after that statement (its COMMIT) returned. Each item runs in its own
--    subtransaction, so an item that fails on the stored state (a missing
--    file, a name taken) fails alone with a Polaris code.
--  * Writes never remove rows: `deleted` keeps a tombstone so that pollers
--    on other nodes see the removal. lodestar_config_purge() removes group
--    and release tombstones older than a bound; file rows stay (their
--    release_seq must survive a delete and re-create of the same name).
--  * A BEFORE trigger stamps every inserted or updated row with
--    row_version = nextval(lodestar_config_row_seq) (global, only grows: a
--    node applies a row only when its row_version is higher than the one it
--    holds) and txid = pg_current_xact_id(). Pollers read rows WHERE
--    txid >= their previous snapshot's xmin (lodestar_config_changes).
--  * Release versions: per file, release_seq + 1 on every activation
--    (publish, rollback, and the main release when a beta stops), stored on
--    the file row, never reused.
--  * notification_id: nextval(lodestar_config_notification_seq) whenever
--    what clients read of a file changes, stored on the file row and on the
--    release that caused it. It is taken after the file row is locked, so
--    per file it grows in commit order (Apollo's notificationId).
--  * At most one active release and one active beta release per file
--    (partial unique index).

CREATE SEQUENCE lodestar_config_row_seq;
CREATE SEQUENCE lodestar_config_notification_seq;
CREATE SEQUENCE lodestar_config_release_name_seq;

CREATE FUNCTION lodestar_config_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_version := nextval('lodestar_config_row_seq');
    NEW.txid := pg_current_xact_id();
    RETURN NEW;
END
$$;

-- Config groups (Polaris ConfigFileGroup; Nacos group; Apollo appId).
CREATE TABLE lodestar_config_group (
    id          bigserial NOT NULL UNIQUE,
    namespace   text NOT NULL,
    name        text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    owner       text NOT NULL DEFAULT '',
    business    text NOT NULL DEFAULT '',
    department  text NOT NULL DEFAULT '',
    metadata    jsonb NOT NULL DEFAULT '{}',
    create_by   text NOT NULL DEFAULT '',
    modify_by   text NOT NULL DEFAULT '',
    ctime       timestamptz NOT NULL DEFAULT now(),
    mtime       timestamptz NOT NULL DEFAULT now(),
    deleted     boolean NOT NULL DEFAULT false,
    row_version bigint NOT NULL DEFAULT 0,
    txid        xid8 NOT NULL DEFAULT '0',
    PRIMARY KEY (namespace, name)
);
CREATE INDEX lodestar_config_group_txid ON lodestar_config_group (txid);
CREATE TRIGGER lodestar_config_group_stamp BEFORE INSERT OR UPDATE ON lodestar_config_group
    FOR EACH ROW EXECUTE FUNCTION lodestar_config_stamp();

-- Config files: the editable draft. Clients never read this table's
-- content; they read releases.
CREATE TABLE lodestar_config_file (
    id              bigserial NOT NULL UNIQUE,
    namespace       text NOT NULL,
    grp             text NOT NULL,
    name            text NOT NULL,
    content         text NOT NULL DEFAULT '',
    format          text NOT NULL DEFAULT 'text',
    comment         text NOT NULL DEFAULT '',
    tags            jsonb NOT NULL DEFAULT '[]',     -- [{"key": k, "value": v}, ...] in order
    encrypted       boolean NOT NULL DEFAULT false,
    encrypt_algo    text NOT NULL DEFAULT '',
    create_by       text NOT NULL DEFAULT '',
    modify_by       text NOT NULL DEFAULT '',
    ctime           timestamptz NOT NULL DEFAULT now(),
    mtime           timestamptz NOT NULL DEFAULT now(),
    release_seq     bigint NOT NULL DEFAULT 0,       -- last release version handed out
    notification_id bigint NOT NULL DEFAULT 0,       -- last change of what clients read
    deleted         boolean NOT NULL DEFAULT false,
    row_version     bigint NOT NULL DEFAULT 0,
    txid            xid8 NOT NULL DEFAULT '0',
    PRIMARY KEY (namespace, grp, name)
);
CREATE INDEX lodestar_config_file_txid ON lodestar_config_file (txid);
CREATE TRIGGER lodestar_config_file_stamp BEFORE INSERT OR UPDATE ON lodestar_config_file
    FOR EACH ROW EXECUTE FUNCTION lodestar_config_stamp();

-- Releases: a snapshot of a file's content under a release name. `active`
-- marks what clients read (beta = false) or what the beta clients read
-- (beta = true).
CREATE TABLE lodestar_config_release (
    id              bigserial PRIMARY KEY,
    namespace       text NOT NULL,
    grp             text NOT NULL,
    file_name       text NOT NULL,
    name            text NOT NULL,
    content         text NOT NULL DEFAULT '',
    md5             text NOT NULL DEFAULT '',
    format          text NOT NULL DEFAULT 'text',
    tags            jsonb NOT NULL DEFAULT '[]',
    comment         text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    encrypted       boolean NOT NULL DEFAULT false,
    encrypt_algo    text NOT NULL DEFAULT '',
    version         bigint NOT NULL,
    active          boolean NOT NULL DEFAULT false,
    beta            boolean NOT NULL DEFAULT false,
    beta_ips        jsonb NOT NULL DEFAULT '[]',     -- ["10.0.0.1", ...]
    beta_labels     jsonb NOT NULL DEFAULT '{}',     -- {"env": "gray", ...}
    create_by       text NOT NULL DEFAULT '',
    modify_by       text NOT NULL DEFAULT '',
    ctime           timestamptz NOT NULL DEFAULT now(),
    mtime           timestamptz NOT NULL DEFAULT now(),
    notification_id bigint NOT NULL DEFAULT 0,
    deleted         boolean NOT NULL DEFAULT false,
    row_version     bigint NOT NULL DEFAULT 0,
    txid            xid8 NOT NULL DEFAULT '0',
    UNIQUE (namespace, grp, file_name, name)
);
CREATE INDEX lodestar_config_release_txid ON lodestar_config_release (txid);
CREATE UNIQUE INDEX lodestar_config_release_one_active ON lodestar_config_release (namespace, grp, file_name, beta)
    WHERE active;
CREATE TRIGGER lodestar_config_release_stamp BEFORE INSERT OR UPDATE ON lodestar_config_release
    FOR EACH ROW EXECUTE FUNCTION lodestar_config_stamp();

-- Release history: one row per publish, beta publish, stop-beta, rollback
-- and release deletion (Polaris types normal, betaing, cancel-gray,
-- rollback, delete). Append-only; read by the admin API only.
CREATE TABLE lodestar_config_release_history (
    id           bigserial PRIMARY KEY,
    namespace    text NOT NULL,
    grp          text NOT NULL,
    file_name    text NOT NULL,
    release_name text NOT NULL,
    type         text NOT NULL,
    status       text NOT NULL DEFAULT 'success',
    content      text NOT NULL DEFAULT '',
    md5          text NOT NULL DEFAULT '',
    format       text NOT NULL DEFAULT 'text',
    tags         jsonb NOT NULL DEFAULT '[]',
    comment      text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    version      bigint NOT NULL DEFAULT 0,
    beta_ips     jsonb NOT NULL DEFAULT '[]',
    beta_labels  jsonb NOT NULL DEFAULT '{}',
    operator     text NOT NULL DEFAULT '',
    ctime        timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL DEFAULT ''
);
CREATE INDEX lodestar_config_release_history_file ON lodestar_config_release_history (namespace, grp, file_name, id);

-- ---- rows as JSON (one shape for loads, polls and write results) ----

CREATE FUNCTION lodestar_config_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint
$$;

CREATE FUNCTION lodestar_config_group_json(g lodestar_config_group) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', g.id, 'namespace', g.namespace, 'name', g.name, 'comment', g.comment,
        'owner', g.owner, 'business', g.business, 'department', g.department, 'metadata', g.metadata,
        'create_by', g.create_by, 'modify_by', g.modify_by, 'ctime', lodestar_config_ms(g.ctime),
        'mtime', lodestar_config_ms(g.mtime), 'deleted', g.deleted, 'row_version', g.row_version)
$$;

CREATE FUNCTION lodestar_config_file_json(f lodestar_config_file) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', f.id, 'namespace', f.namespace, 'group', f.grp, 'name', f.name,
        'content', f.content, 'format', f.format, 'comment', f.comment, 'tags', f.tags,
        'encrypted', f.encrypted, 'encrypt_algo', f.encrypt_algo, 'create_by', f.create_by,
        'modify_by', f.modify_by, 'ctime', lodestar_config_ms(f.ctime), 'mtime', lodestar_config_ms(f.mtime),
        'release_seq', f.release_seq, 'notification_id', f.notification_id, 'deleted', f.deleted,
        'row_version', f.row_version)
$$;

-- Content only for active releases: that is all a worker keeps in memory.
CREATE FUNCTION lodestar_config_release_json(r lodestar_config_release) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'namespace', r.namespace, 'group', r.grp, 'file_name', r.file_name,
        'name', r.name, 'content', CASE WHEN r.active THEN r.content ELSE NULL END, 'md5', r.md5,
        'format', r.format, 'tags', r.tags, 'comment', r.comment, 'description', r.description,
        'encrypted', r.encrypted, 'encrypt_algo', r.encrypt_algo, 'version', r.version, 'active', r.active,
        'beta', r.beta, 'beta_ips', r.beta_ips, 'beta_labels', r.beta_labels, 'create_by', r.create_by,
        'modify_by', r.modify_by, 'ctime', lodestar_config_ms(r.ctime), 'mtime', lodestar_config_ms(r.mtime),
        'notification_id', r.notification_id, 'deleted', r.deleted, 'row_version', r.row_version)
$$;

-- Every row changed by a transaction whose id is >= since (one snapshot:
-- a SQL function marked STABLE reads with its caller's snapshot), plus a
-- row of kind 'xmin': that snapshot's xmin, the `since` of the next poll.
-- live_only leaves tombstones out (a full load).
CREATE FUNCTION lodestar_config_changes(since xid8, live_only boolean)
RETURNS TABLE (kind text, data jsonb) LANGUAGE sql STABLE AS $$
    SELECT 'xmin', to_jsonb(pg_snapshot_xmin(pg_current_snapshot())::text)
    UNION ALL
    SELECT 'group', lodestar_config_group_json(g) FROM lodestar_config_group g
        WHERE g.txid >= since AND NOT (live_only AND g.deleted)
    UNION ALL
    SELECT 'file', lodestar_config_file_json(f) FROM lodestar_config_file f
        WHERE f.txid >= since AND NOT (live_only AND f.deleted)
    UNION ALL
    SELECT 'release', lodestar_config_release_json(r) FROM lodestar_config_release r
        WHERE r.txid >= since AND NOT (live_only AND r.deleted)
$$;

-- Remove tombstones older than `keep`. File rows are kept (release_seq).
CREATE FUNCTION lodestar_config_purge(keep interval) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
    v_m bigint;
BEGIN
    DELETE FROM lodestar_config_release WHERE deleted AND mtime < now() - keep;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    DELETE FROM lodestar_config_group WHERE deleted AND mtime < now() - keep;
    GET DIAGNOSTICS v_m = ROW_COUNT;
    RETURN v_n + v_m;
END
$$;

-- ---- writes ----

-- Fail the current item with a Polaris code (carried in HINT).
CREATE FUNCTION lodestar_config_fail(p_code int, p_msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = p_msg, HINT = p_code::text;
END
$$;

CREATE FUNCTION lodestar_config_key(p_ns text, p_grp text, p_name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT p_ns || '/' || p_grp || '/' || p_name
$$;

-- The group must exist for a file: create it (or revive its tombstone) and
-- hold a share lock so that it cannot be deleted before this commits.
CREATE FUNCTION lodestar_config_group_ensure(p_ns text, p_grp text, p_by text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_deleted boolean;
BEGIN
    INSERT INTO lodestar_config_group (namespace, name, create_by, modify_by)
        VALUES (p_ns, p_grp, p_by, p_by) ON CONFLICT (namespace, name) DO NOTHING;
    SELECT deleted INTO v_deleted FROM lodestar_config_group WHERE namespace = p_ns AND name = p_grp FOR SHARE;
    IF v_deleted THEN
        UPDATE lodestar_config_group SET deleted = false, comment = '', owner = '', business = '',
            department = '', metadata = '{}', create_by = p_by, modify_by = p_by, ctime = now(), mtime = now()
            WHERE namespace = p_ns AND name = p_grp;
    END IF;
END
$$;

CREATE FUNCTION lodestar_config_group_create(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lodestar_config_group AS g (namespace, name, comment, owner, business, department, metadata,
            create_by, modify_by)
        VALUES (p->>'namespace', p->>'name', coalesce(p->>'comment', ''), coalesce(p->>'owner', ''),
            coalesce(p->>'business', ''), coalesce(p->>'department', ''), coalesce(p->'metadata', '{}'),
            p_by, p_by)
        ON CONFLICT (namespace, name) DO UPDATE SET comment = EXCLUDED.comment, owner = EXCLUDED.owner,
            business = EXCLUDED.business, department = EXCLUDED.department, metadata = EXCLUDED.metadata,
            create_by = EXCLUDED.create_by, modify_by = EXCLUDED.modify_by, ctime = now(), mtime = now(),
            deleted = false
        WHERE g.deleted;
    IF NOT FOUND THEN
        PERFORM lodestar_config_fail(400201, format('config group %s/%s already exists', p->>'namespace', p->>'name'));
    END IF;
    RETURN '{}';
END
$$;

CREATE FUNCTION lodestar_config_group_update(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lodestar_config_group SET comment = coalesce(p->>'comment', comment), owner = coalesce(p->>'owner', owner),
            business = coalesce(p->>'business', business), department = coalesce(p->>'department', department),
            metadata = coalesce(p->'metadata', metadata), modify_by = p_by, mtime = now()
        WHERE namespace = p->>'namespace' AND name = p->>'name' AND NOT deleted;
    IF NOT FOUND THEN
        PERFORM lodestar_config_fail(400202, format('config group %s/%s does not exist', p->>'namespace', p->>'name'));
    END IF;
    RETURN '{}';
END
$$;

CREATE FUNCTION lodestar_config_group_delete(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    PERFORM 1 FROM lodestar_config_group WHERE namespace = p->>'namespace' AND name = p->>'name' AND NOT deleted
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{}';  -- already gone: nothing to do (Polaris answers success)
    END IF;
    SELECT count(*) INTO v_n FROM lodestar_config_file
        WHERE namespace = p->>'namespace' AND grp = p->>'name' AND NOT deleted;
    IF v_n > 0 THEN
        PERFORM lodestar_config_fail(400201, format('config group %s/%s still holds %s config file(s); delete them first',
            p->>'namespace', p->>'name', v_n));
    END IF;
    UPDATE lodestar_config_group SET deleted = true, modify_by = p_by, mtime = now()
        WHERE namespace = p->>'namespace' AND name = p->>'name';
    RETURN '{}';
END
$$;

CREATE FUNCTION lodestar_config_file_create(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lodestar_config_group_ensure(p->>'namespace', p->>'group', p_by);
    INSERT INTO lodestar_config_file AS f (namespace, grp, name, content, format, comment, tags, encrypted,
            encrypt_algo, create_by, modify_by)
        VALUES (p->>'namespace', p->>'group', p->>'name', coalesce(p->>'content', ''),
            coalesce(p->>'format', 'text'), coalesce(p->>'comment', ''), coalesce(p->'tags', '[]'),
            coalesce((p->>'encrypted')::boolean, false), coalesce(p->>'encrypt_algo', ''), p_by, p_by)
        ON CONFLICT (namespace, grp, name) DO UPDATE SET content = EXCLUDED.content, format = EXCLUDED.format,
            comment = EXCLUDED.comment, tags = EXCLUDED.tags, encrypted = EXCLUDED.encrypted,
            encrypt_algo = EXCLUDED.encrypt_algo, create_by = EXCLUDED.create_by, modify_by = EXCLUDED.modify_by,
            ctime = now(), mtime = now(), deleted = false
        WHERE f.deleted;
    IF NOT FOUND THEN
        PERFORM lodestar_config_fail(400201, format('config file %s already exists',
            lodestar_config_key(p->>'namespace', p->>'group', p->>'name')));
    END IF;
    RETURN '{}';
END
$$;

CREATE FUNCTION lodestar_config_file_update(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lodestar_config_file SET content = coalesce(p->>'content', content), format = coalesce(p->>'format', format),
            comment = coalesce(p->>'comment', comment), tags = coalesce(p->'tags', tags),
            encrypted = coalesce((p->>'encrypted')::boolean, encrypted),
            encrypt_algo = coalesce(p->>'encrypt_algo', encrypt_algo), modify_by = p_by, mtime = now()
        WHERE namespace = p->>'namespace' AND grp = p->>'group' AND name = p->>'name' AND NOT deleted;
    IF NOT FOUND THEN
        PERFORM lodestar_config_fail(400202, format('config file %s does not exist',
            lodestar_config_key(p->>'namespace', p->>'group', p->>'name')));
    END IF;
    RETURN '{}';
END
$$;

CREATE FUNCTION lodestar_config_history(r lodestar_config_release, p_type text, p_by text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO lodestar_config_release_history (namespace, grp, file_name, release_name, type, content, md5, format,
            tags, comment, description, version, beta_ips, beta_labels, operator)
        VALUES (r.namespace, r.grp, r.file_name, r.name, p_type, r.content, r.md5, r.format, r.tags, r.comment,
            r.description, r.version, r.beta_ips, r.beta_labels, p_by)
$$;

CREATE FUNCTION lodestar_config_file_delete(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
    v_rel lodestar_config_release;
    v_nid bigint := NULL;
BEGIN
    SELECT * INTO v_file FROM lodestar_config_file
        WHERE namespace = p->>'namespace' AND grp = p->>'group' AND name = p->>'name' AND NOT deleted FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{}';  -- already gone (Polaris answers success)
    END IF;
    FOR v_rel IN SELECT * FROM lodestar_config_release
            WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active
            ORDER BY beta LOOP
        PERFORM lodestar_config_history(v_rel, 'delete', p_by);
        v_nid := coalesce(v_nid, nextval('lodestar_config_notification_seq'));
    END LOOP;
    UPDATE lodestar_config_release SET deleted = true, active = false, content = '', modify_by = p_by, mtime = now(),
            notification_id = CASE WHEN active THEN v_nid ELSE notification_id END
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND NOT deleted;
    UPDATE lodestar_config_file SET deleted = true, content = '', modify_by = p_by, mtime = now(),
            notification_id = coalesce(v_nid, notification_id)
        WHERE id = v_file.id;
    RETURN '{}';
END
$$;

-- Lock a live file for a release operation; NULL id when it does not exist.
CREATE FUNCTION lodestar_config_file_lock(p jsonb) RETURNS lodestar_config_file LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
BEGIN
    SELECT * INTO v_file FROM lodestar_config_file
        WHERE namespace = p->>'namespace' AND grp = p->>'group' AND name = p->>'file_name' AND NOT deleted
        FOR UPDATE;
    RETURN v_file;
END
$$;

-- Publish the file's current draft as a new release (p: namespace, group,
-- file_name, release_name, comment, description, md5 = the content the
-- worker validated, beta = {ips: [...], labels: {...}} for a beta release).
CREATE FUNCTION lodestar_config_publish(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
    v_rel lodestar_config_release;
    v_beta boolean := p ? 'beta';
    v_name text;
    v_version bigint;
    v_nid bigint;
BEGIN
    v_file := lodestar_config_file_lock(p);
    IF v_file.id IS NULL THEN
        PERFORM lodestar_config_fail(400202, format('config file %s does not exist',
            lodestar_config_key(p->>'namespace', p->>'group', p->>'file_name')));
    END IF;
    IF p ? 'md5' AND md5(v_file.content) <> p->>'md5' THEN
        PERFORM lodestar_config_fail(409000, format('config file %s changed while it was being published; retry',
            lodestar_config_key(v_file.namespace, v_file.grp, v_file.name)));
    END IF;
    SELECT * INTO v_rel FROM lodestar_config_release
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active AND beta;
    IF FOUND THEN
        PERFORM lodestar_config_fail(409000, format('config file %s has an active beta release %s; stop it first',
            lodestar_config_key(v_file.namespace, v_file.grp, v_file.name), v_rel.name));
    END IF;
    v_name := nullif(p->>'release_name', '');
    IF v_name IS NULL THEN
        v_name := v_file.name || '-' || extract(epoch FROM now())::bigint || '-'
            || nextval('lodestar_config_release_name_seq');
    END IF;
    PERFORM 1 FROM lodestar_config_release
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND name = v_name
            AND NOT deleted;
    IF FOUND THEN
        PERFORM lodestar_config_fail(400201, format('release %s of config file %s already exists; roll back to it to make it active again',
            v_name, lodestar_config_key(v_file.namespace, v_file.grp, v_file.name)));
    END IF;
    v_version := v_file.release_seq + 1;
    v_nid := nextval('lodestar_config_notification_seq');
    IF NOT v_beta THEN
        UPDATE lodestar_config_release SET active = false, mtime = now()
            WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active
                AND NOT beta;
    END IF;
    -- a tombstone of the same name gives way to the new release
    DELETE FROM lodestar_config_release
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND name = v_name
            AND deleted;
    INSERT INTO lodestar_config_release (namespace, grp, file_name, name, content, md5, format, tags, comment,
            description, encrypted, encrypt_algo, version, active, beta, beta_ips, beta_labels, create_by, modify_by,
            notification_id)
        VALUES (v_file.namespace, v_file.grp, v_file.name, v_name, v_file.content, md5(v_file.content),
            v_file.format, v_file.tags, coalesce(p->>'comment', ''), coalesce(p->>'description', ''),
            v_file.encrypted, v_file.encrypt_algo, v_version, true, v_beta,
            coalesce(p->'beta'->'ips', '[]'), coalesce(p->'beta'->'labels', '{}'), p_by, p_by, v_nid)
        RETURNING * INTO v_rel;
    UPDATE lodestar_config_file SET release_seq = v_version, notification_id = v_nid WHERE id = v_file.id;
    PERFORM lodestar_config_history(v_rel, CASE WHEN v_beta THEN 'betaing' ELSE 'normal' END, p_by);
    RETURN jsonb_build_object('release_name', v_name, 'version', v_version, 'md5', v_rel.md5);
END
$$;

CREATE FUNCTION lodestar_config_rollback(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
    v_rel lodestar_config_release;
    v_version bigint;
    v_nid bigint;
BEGIN
    v_file := lodestar_config_file_lock(p);
    IF v_file.id IS NULL THEN
        PERFORM lodestar_config_fail(400202, format('config file %s does not exist',
            lodestar_config_key(p->>'namespace', p->>'group', p->>'file_name')));
    END IF;
    IF coalesce(p->>'release_name', '') <> '' THEN
        SELECT * INTO v_rel FROM lodestar_config_release
            WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name
                AND name = p->>'release_name' AND NOT deleted AND NOT beta;
    ELSE
        SELECT * INTO v_rel FROM lodestar_config_release
            WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name
                AND version = (p->>'version')::bigint AND NOT deleted AND NOT beta;
    END IF;
    IF NOT FOUND THEN
        PERFORM lodestar_config_fail(400202, format('release %s of config file %s does not exist',
            coalesce(nullif(p->>'release_name', ''), 'version ' || (p->>'version')),
            lodestar_config_key(v_file.namespace, v_file.grp, v_file.name)));
    END IF;
    v_version := v_file.release_seq + 1;
    v_nid := nextval('lodestar_config_notification_seq');
    UPDATE lodestar_config_release SET active = false, mtime = now()
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active AND NOT beta
            AND id <> v_rel.id;
    UPDATE lodestar_config_release SET active = true, version = v_version, notification_id = v_nid,
            modify_by = p_by, mtime = now()
        WHERE id = v_rel.id RETURNING * INTO v_rel;
    UPDATE lodestar_config_file SET release_seq = v_version, notification_id = v_nid WHERE id = v_file.id;
    PERFORM lodestar_config_history(v_rel, 'rollback', p_by);
    RETURN jsonb_build_object('release_name', v_rel.name, 'version', v_version, 'md5', v_rel.md5);
END
$$;

CREATE FUNCTION lodestar_config_release_delete(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
    v_rel lodestar_config_release;
    v_nid bigint;
BEGIN
    v_file := lodestar_config_file_lock(p);
    IF v_file.id IS NULL THEN
        RETURN '{}';
    END IF;
    SELECT * INTO v_rel FROM lodestar_config_release
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name
            AND name = p->>'release_name' AND NOT deleted FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{}';  -- already gone (Polaris answers success)
    END IF;
    PERFORM lodestar_config_history(v_rel, 'delete', p_by);
    IF v_rel.active THEN
        v_nid := nextval('lodestar_config_notification_seq');
        UPDATE lodestar_config_file SET notification_id = v_nid WHERE id = v_file.id;
    END IF;
    UPDATE lodestar_config_release SET deleted = true, active = false, content = '', modify_by = p_by, mtime = now(),
            notification_id = coalesce(v_nid, notification_id)
        WHERE id = v_rel.id;
    RETURN '{}';
END
$$;

-- End a beta. The main release (if any) moves to a new version so that
-- clients that read the beta (whose version is higher) see a change.
CREATE FUNCTION lodestar_config_stop_beta(p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_file lodestar_config_file;
    v_rel lodestar_config_release;
    v_nid bigint;
    v_version bigint;
BEGIN
    v_file := lodestar_config_file_lock(p);
    IF v_file.id IS NULL THEN
        RETURN '{}';
    END IF;
    SELECT * INTO v_rel FROM lodestar_config_release
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active AND beta;
    IF NOT FOUND THEN
        RETURN '{}';  -- no beta running (Polaris answers success)
    END IF;
    v_nid := nextval('lodestar_config_notification_seq');
    UPDATE lodestar_config_release SET active = false, modify_by = p_by, mtime = now(), notification_id = v_nid
        WHERE id = v_rel.id;
    v_version := v_file.release_seq;
    UPDATE lodestar_config_release SET version = v_file.release_seq + 1, notification_id = v_nid, mtime = now()
        WHERE namespace = v_file.namespace AND grp = v_file.grp AND file_name = v_file.name AND active AND NOT beta;
    IF FOUND THEN
        v_version := v_file.release_seq + 1;
    END IF;
    UPDATE lodestar_config_file SET release_seq = v_version, notification_id = v_nid WHERE id = v_file.id;
    PERFORM lodestar_config_history(v_rel, 'cancel-gray', p_by);
    RETURN '{}';
END
$$;

-- One item of a write. Publishing operations carrying a file ('file' key)
-- create or update it first (create_and_publish, upsert_and_publish).
CREATE FUNCTION lodestar_config_item(p_op text, p jsonb, p_by text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    CASE p_op
    WHEN 'GROUP_CREATE' THEN RETURN lodestar_config_group_create(p, p_by);
    WHEN 'GROUP_UPDATE' THEN RETURN lodestar_config_group_update(p, p_by);
    WHEN 'GROUP_DELETE' THEN RETURN lodestar_config_group_delete(p, p_by);
    WHEN 'FILE_CREATE' THEN RETURN lodestar_config_file_create(p, p_by);
    WHEN 'FILE_UPDATE' THEN RETURN lodestar_config_file_update(p, p_by);
    WHEN 'FILE_DELETE' THEN RETURN lodestar_config_file_delete(p, p_by);
    WHEN 'FILE_PUBLISH' THEN RETURN lodestar_config_publish(p, p_by);
    WHEN 'FILE_CREATE_AND_PUBLISH' THEN
        PERFORM lodestar_config_file_create(p->'file', p_by);
        RETURN lodestar_config_publish(p, p_by);
    WHEN 'FILE_UPSERT_AND_PUBLISH' THEN
        PERFORM 1 FROM lodestar_config_file WHERE namespace = p->'file'->>'namespace'
            AND grp = p->'file'->>'group' AND name = p->'file'->>'name' AND NOT deleted FOR UPDATE;
        IF FOUND THEN
            PERFORM lodestar_config_file_update(p->'file', p_by);
        ELSE
            PERFORM lodestar_config_file_create(p->'file', p_by);
        END IF;
        RETURN lodestar_config_publish(p, p_by);
    WHEN 'RELEASE_ROLLBACK' THEN RETURN lodestar_config_rollback(p, p_by);
    WHEN 'RELEASE_DELETE' THEN RETURN lodestar_config_release_delete(p, p_by);
    WHEN 'STOP_BETA' THEN RETURN lodestar_config_stop_beta(p, p_by);
    ELSE
        RAISE EXCEPTION 'unknown config write operation %', p_op;
    END CASE;
END
$$;

-- The one entry of every config write: p_items is a JSON array of items,
-- each optionally with "by" (its operator; else p_by). Returns one 'result'
-- row per item ({"i", "code", "info", ...}) and then every row this
-- transaction changed, as lodestar_config_changes shapes them.
CREATE FUNCTION lodestar_config_write(p_op text, p_items jsonb, p_by text)
RETURNS TABLE (kind text, data jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_i bigint;
    v_res jsonb;
    v_msg text;
    v_hint text;
    v_xid xid8;
BEGIN
    FOR v_item, v_i IN SELECT e.value, e.ord - 1 FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(value, ord)
            ORDER BY e.ord LOOP
        BEGIN
            v_res := lodestar_config_item(p_op, v_item, coalesce(nullif(v_item->>'by', ''), p_by));
            kind := 'result';
            data := jsonb_build_object('i', v_i, 'code', 200000) || coalesce(v_res, '{}');
        EXCEPTION
            WHEN raise_exception THEN
                GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
                IF v_hint !~ '^[0-9]{6}$' THEN
                    RAISE;
                END IF;
                kind := 'result';
                data := jsonb_build_object('i', v_i, 'code', v_hint::int, 'info', v_msg);
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                kind := 'result';
                data := jsonb_build_object('i', v_i, 'code', 400201, 'info', v_msg);
        END;
        RETURN NEXT;
    END LOOP;
    v_xid := pg_current_xact_id_if_assigned();
    IF v_xid IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'group'::text, lodestar_config_group_json(g) FROM lodestar_config_group g WHERE g.txid = v_xid;
    RETURN QUERY SELECT 'file'::text, lodestar_config_file_json(f) FROM lodestar_config_file f WHERE f.txid = v_xid;
    RETURN QUERY SELECT 'release'::text, lodestar_config_release_json(r) FROM lodestar_config_release r
        WHERE r.txid = v_xid;
END
$$;
