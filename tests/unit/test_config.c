/*
 * test_config.c: the configuration parser (common/config.c).
 *
 * Covers the documented example deploy/lodestar.yaml, defaults, path
 * resolution, environment expansion, the LODESTAR_PG_DSN override, the
 * equivalence of cfg_load_buffer and cfg_load_file, the path helpers, and
 * broken files under tests/fixtures/config/ with the exact error lines they
 * must produce. Error-file tests chdir into LODESTAR_TEST_DATA/config and
 * pass bare file names, so the expected "FILE:LINE:COL: ..." strings are
 * stable wherever the tree lives.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "environment variable %s must be set (tests/CMakeLists.txt sets it)", name);
    return v;
}

static void enter_config_data(void)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/config", env_or_fail("LODESTAR_TEST_DATA"));
    cr_assert_eq(chdir(dir), 0, "chdir %s failed", dir);
}

static char *example_path(void)
{
    char *p;
    cr_assert(asprintf(&p, "%s/deploy/lodestar.yaml", env_or_fail("LODESTAR_SOURCE_DIR")) > 0);
    return p;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0;
    FILE *m = open_memstream(&buf, &cap);
    cr_assert_not_null(m);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    *len = cap;
    return buf;
}

static char *join_errors(const cfg_errors_t *e)
{
    char *s = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&s, &n);
    for (size_t i = 0; i < e->count; i++)
        fprintf(m, "\n  %s", e->msgs[i]);
    if (e->count == 0)
        fputs(" (none)", m);
    fclose(m);
    return s;
}

/* Load a buffer that must be valid. */
static cfg_t *load_ok(const char *yaml, const char *path)
{
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    int r = cfg_load_buffer(yaml, strlen(yaml), path, &cfg, &errs);
    char *got = join_errors(&errs);
    cr_assert_eq(r, 0, "expected %s to load, errors:%s", path, got);
    cr_assert_not_null(cfg);
    cr_assert_eq(errs.count, 0);
    free(got);
    cfg_errors_clear(&errs);
    return cfg;
}

static void check_errors(int r, cfg_t *cfg, cfg_errors_t *errs, const char *what, const char *const *want,
                         size_t n)
{
    char *got = join_errors(errs);
    cr_assert_eq(r, -1, "%s: expected failure, got %d", what, r);
    cr_assert_null(cfg, "%s: *out must be NULL on failure", what);
    cr_assert_eq(errs->count, n, "%s: expected %zu errors, got %zu:%s", what, n, errs->count, got);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(errs->msgs[i], want[i], "%s: error %zu differs; all errors:%s", what, i, got);
    cr_assert_eq(errs->dropped, 0, "%s: nothing should be dropped", what);
    free(got);
    cfg_errors_clear(errs);
}

/* Load tests/fixtures/config/<file> and compare every error line exactly. */
static void expect_file_errors(const char *file, const char *const *want, size_t n)
{
    enter_config_data();
    cfg_t *cfg = (cfg_t *)1;
    cfg_errors_t errs = {0};
    int r = cfg_load_file(file, &cfg, &errs);
    check_errors(r, cfg, &errs, file, want, n);
}

static void expect_buffer_errors(const char *yaml, const char *path, const char *const *want, size_t n)
{
    cfg_t *cfg = (cfg_t *)1;
    cfg_errors_t errs = {0};
    int r = cfg_load_buffer(yaml, strlen(yaml), path, &cfg, &errs);
    check_errors(r, cfg, &errs, path, want, n);
}

#define EXPECT_FILE(file, ...)                                                                                 \
    do {                                                                                                       \
        static const char *const want_[] = {__VA_ARGS__};                                                      \
        expect_file_errors(file, want_, sizeof want_ / sizeof want_[0]);                                       \
    } while (0)

#define EXPECT_BUFFER(yaml, path, ...)                                                                         \
    do {                                                                                                       \
        static const char *const want_[] = {__VA_ARGS__};                                                      \
        expect_buffer_errors(yaml, path, want_, sizeof want_ / sizeof want_[0]);                               \
    } while (0)

/* ------------------------------------------------------------------ */
/* The documented example                                              */
/* ------------------------------------------------------------------ */

Test(config, example_file_parses_with_documented_values)
{
    unsetenv("LODESTAR_PG_DSN");
    char *path = example_path();
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    int r = cfg_load_file(path, &cfg, &errs);
    char *got = join_errors(&errs);
    cr_assert_eq(r, 0, "deploy/lodestar.yaml must parse cleanly:%s", got);
    free(got);

    cr_assert_str_eq(cfg->path, path);
    char *dir = strdup(path);
    *strrchr(dir, '/') = '\0';
    cr_assert_str_eq(cfg->base_dir, dir);
    free(dir);

    cr_assert_str_eq(cfg->runtime_dir, "/run/lodestar");
    cr_assert_eq(cfg->log.level, LOG_LVL_INFO);
    cr_assert_null(cfg->log.file, "logging goes to stderr (journald) by default");
    cr_assert_eq(cfg->supervisor.shutdown_timeout_ms, 8000);
    cr_assert_eq(cfg->supervisor.drain_timeout_ms, 5000);
    cr_assert_eq(cfg->supervisor.restart_backoff_initial_ms, 100);
    cr_assert_eq(cfg->supervisor.restart_backoff_max_ms, 30000);
    cr_assert_eq(cfg->supervisor.crash_loop_window_ms, 60000);
    cr_assert_eq(cfg->supervisor.crash_loop_max, 5);
    cr_assert_eq(cfg->supervisor.ready_timeout_ms, 60000);
    cr_assert_eq(cfg->supervisor.ping_interval_ms, 2000);
    cr_assert_eq(cfg->ipc.max_frame_bytes, 16777216u);
    cr_assert_eq(cfg->ipc.request_timeout_ms, 5000);
    cr_assert_null(cfg->store.dsn, "empty dsn means embedded");
    cr_assert_str_eq(cfg->store.embedded.data_dir, "/var/lib/lodestar/postgres");
    cr_assert_str_eq(cfg->store.embedded.bin_dir, "/usr/lib/postgresql/15/bin");
    cr_assert_str_eq(cfg->store.embedded.user, "postgres");
    cr_assert_eq(cfg->store.embedded.port, 5432);
    cr_assert_eq(cfg->store.connect_timeout_ms, 5000);
    cr_assert_eq(cfg->store.reconnect_backoff_max_ms, 5000);
    cr_assert(cfg->healthcheck.enabled);
    cr_assert_eq(cfg->healthcheck.store, CFG_HC_MEMORY);
    cr_assert_str_eq(cfg->healthcheck.redis_address, "127.0.0.1:6379");
    cr_assert_null(cfg->healthcheck.redis_password);
    cr_assert_eq(cfg->healthcheck.redis_db, 0);
    cr_assert_str_eq(cfg->healthcheck.redis_key_prefix, "lodestar:");
    cr_assert_eq(cfg->healthcheck.redis_timeout_ms, 2000);
    cr_assert_eq(cfg->healthcheck.slot_num, 30, "Polaris' slotNum");
    cr_assert_eq(cfg->healthcheck.min_check_interval_ms, 1000);
    cr_assert_eq(cfg->healthcheck.max_check_interval_ms, 30000);
    cr_assert_eq(cfg->healthcheck.protect_threshold_percent, 0, "no protect threshold by default");
    cr_assert_eq(cfg->healthcheck.restart_grace_ms, 0);
    cr_assert_not(cfg->healthcheck.cleanup_enabled, "the clean-up job is off by default");
    cr_assert_eq(cfg->healthcheck.cleanup_unhealthy_for_s, 3600);
    cr_assert_null(cfg->healthcheck.cluster_node_id, "empty node_id: derived from the host");
    cr_assert_eq(cfg->healthcheck.cluster_announce_ttl_ms, 5000);
    cr_assert(cfg->naming.enabled && cfg->config.enabled && cfg->health.enabled);
    cr_assert(cfg->naming_worker.auto_create_namespace && cfg->naming_worker.auto_create_service);
    cr_assert_eq(cfg->naming_worker.batch_max, 128);
    cr_assert_eq(cfg->naming_worker.batch_wait_ms, 32);
    cr_assert_eq(cfg->naming_worker.batch_queue_size, 10240);
    cr_assert_eq(cfg->naming_worker.sync_interval_ms, 250);
    cr_assert_eq(cfg->naming_worker.deleted_retention_s, 3600);
    cr_assert_eq(cfg->config_worker.max_content_bytes, 20000u);
    cr_assert_eq(cfg->config_worker.sync_interval_ms, 250);
    cr_assert_eq(cfg->config_worker.deleted_retention_s, 3600);

    cr_assert_eq(cfg->n_listeners, 3);
    static const struct {
        const char *name, *protocol;
        int port;
    } want[] = {{"polaris-http", "polaris-http", 8090},
                {"polaris-grpc-naming", "polaris-grpc", 8091},
                {"polaris-grpc-config", "polaris-grpc", 8093}};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(cfg->listeners[i].name, want[i].name);
        cr_assert_str_eq(cfg->listeners[i].protocol, want[i].protocol);
        cr_assert_str_eq(cfg->listeners[i].address, "0.0.0.0");
        cr_assert_eq(cfg->listeners[i].port, want[i].port);
        cr_assert(cfg->listeners[i].enabled);
    }

    cr_assert_eq(cfg->n_proc_logs, 1);
    cr_assert_str_eq(cfg->proc_logs[0].role, "supervisor");
    cr_assert_eq(cfg_log_for(cfg, "supervisor"), &cfg->proc_logs[0].log);
    cr_assert_eq(cfg_log_for(cfg, "naming"), &cfg->log);
    cr_assert_eq(cfg_log_for(cfg, NULL), &cfg->log);

    char *dsn = cfg_store_dsn(cfg);
    cr_assert_str_eq(dsn, "host=/run/lodestar/pg port=5432 dbname=lodestar user=lodestar");
    free(dsn);
    cfg_free(cfg);
    free(path);
}

static void assert_cfg_equal(const cfg_t *a, const cfg_t *b)
{
#define STR_EQ(f) cr_assert(((a->f) == NULL && (b->f) == NULL) || ((a->f) && (b->f) && !strcmp(a->f, b->f)), #f " differs")
    STR_EQ(path);
    STR_EQ(base_dir);
    STR_EQ(runtime_dir);
    STR_EQ(log.file);
    STR_EQ(store.dsn);
    STR_EQ(store.embedded.data_dir);
    STR_EQ(store.embedded.bin_dir);
    STR_EQ(store.embedded.user);
    STR_EQ(healthcheck.redis_address);
    STR_EQ(healthcheck.redis_password);
    STR_EQ(healthcheck.redis_key_prefix);
    STR_EQ(healthcheck.cluster_node_id);
    cr_assert_eq(a->log.level, b->log.level);
    cr_assert_eq(memcmp(&a->supervisor, &b->supervisor, sizeof a->supervisor), 0, "supervisor differs");
    cr_assert_eq(memcmp(&a->ipc, &b->ipc, sizeof a->ipc), 0, "ipc differs");
    cr_assert_eq(a->store.embedded.port, b->store.embedded.port);
    cr_assert_eq(a->store.connect_timeout_ms, b->store.connect_timeout_ms);
    cr_assert_eq(a->store.reconnect_backoff_max_ms, b->store.reconnect_backoff_max_ms);
    cr_assert_eq(a->healthcheck.enabled, b->healthcheck.enabled);
    cr_assert_eq(a->healthcheck.store, b->healthcheck.store);
    cr_assert_eq(a->healthcheck.redis_db, b->healthcheck.redis_db);
    cr_assert_eq(a->healthcheck.slot_num, b->healthcheck.slot_num);
    cr_assert_eq(a->healthcheck.min_check_interval_ms, b->healthcheck.min_check_interval_ms);
    cr_assert_eq(a->healthcheck.max_check_interval_ms, b->healthcheck.max_check_interval_ms);
    cr_assert_eq(a->healthcheck.cleanup_enabled, b->healthcheck.cleanup_enabled);
    cr_assert_eq(a->naming.enabled, b->naming.enabled);
    cr_assert_eq(a->config.enabled, b->config.enabled);
    cr_assert_eq(a->health.enabled, b->health.enabled);
    cr_assert_eq(a->n_proc_logs, b->n_proc_logs);
    for (size_t i = 0; i < a->n_proc_logs; i++) {
        STR_EQ(proc_logs[i].role);
        STR_EQ(proc_logs[i].log.file);
        cr_assert_eq(a->proc_logs[i].log.level, b->proc_logs[i].log.level);
    }
    cr_assert_eq(a->n_listeners, b->n_listeners);
    for (size_t i = 0; i < a->n_listeners; i++) {
        STR_EQ(listeners[i].name);
        STR_EQ(listeners[i].protocol);
        STR_EQ(listeners[i].address);
        cr_assert_eq(a->listeners[i].port, b->listeners[i].port);
        cr_assert_eq(a->listeners[i].enabled, b->listeners[i].enabled);
    }
#undef STR_EQ
}

Test(config, load_buffer_equals_load_file)
{
    unsetenv("LODESTAR_PG_DSN");
    char *path = example_path();
    size_t len;
    char *bytes = read_all(path, &len);
    cfg_t *from_file = NULL, *from_buf = NULL;
    cfg_errors_t errs = {0};
    cr_assert_eq(cfg_load_file(path, &from_file, &errs), 0);
    cr_assert_eq(cfg_load_buffer(bytes, len, path, &from_buf, &errs), 0);
    assert_cfg_equal(from_file, from_buf);
    cfg_free(from_file);
    cfg_free(from_buf);

    /* the buffer variant never opens the path: a path that does not exist works */
    cr_assert_eq(cfg_load_buffer(bytes, len, "/nonexistent/lodestar-dir/lodestar.yaml", &from_buf, &errs), 0,
                 "cfg_load_buffer must not read the file");
    cr_assert_str_eq(from_buf->path, "/nonexistent/lodestar-dir/lodestar.yaml");
    cr_assert_str_eq(from_buf->base_dir, "/nonexistent/lodestar-dir");
    cr_assert_str_eq(from_buf->runtime_dir, "/run/lodestar");
    cfg_free(from_buf);
    free(bytes);
    free(path);
}

/* ------------------------------------------------------------------ */
/* Defaults, paths, environment                                        */
/* ------------------------------------------------------------------ */

static void assert_defaults(const cfg_t *cfg, const char *base)
{
    char buf[PATH_MAX];
    cr_assert_str_eq(cfg->base_dir, base);
    snprintf(buf, sizeof buf, "%s/run", base);
    cr_assert_str_eq(cfg->runtime_dir, buf);
    snprintf(buf, sizeof buf, "%s/data/postgres", base);
    cr_assert_str_eq(cfg->store.embedded.data_dir, buf);
    cr_assert_str_eq(cfg->store.embedded.bin_dir, "/usr/lib/postgresql/15/bin");
    cr_assert_str_eq(cfg->store.embedded.user, "postgres");
    cr_assert_eq(cfg->store.embedded.port, 5432);
    cr_assert_null(cfg->store.dsn);
    cr_assert_eq(cfg->store.connect_timeout_ms, 5000);
    cr_assert_eq(cfg->store.reconnect_backoff_max_ms, 5000);
    cr_assert_eq(cfg->log.level, LOG_LVL_INFO);
    cr_assert_null(cfg->log.file);
    cr_assert_eq(cfg->n_proc_logs, 0);
    cr_assert_eq(cfg->supervisor.shutdown_timeout_ms, 8000);
    cr_assert_eq(cfg->supervisor.drain_timeout_ms, 5000);
    cr_assert_eq(cfg->supervisor.restart_backoff_initial_ms, 100);
    cr_assert_eq(cfg->supervisor.restart_backoff_max_ms, 30000);
    cr_assert_eq(cfg->supervisor.crash_loop_window_ms, 60000);
    cr_assert_eq(cfg->supervisor.crash_loop_max, 5);
    cr_assert_eq(cfg->supervisor.ready_timeout_ms, 60000);
    cr_assert_eq(cfg->supervisor.ping_interval_ms, 2000);
    cr_assert_eq(cfg->ipc.max_frame_bytes, 16u * 1024 * 1024);
    cr_assert_eq(cfg->ipc.request_timeout_ms, 5000);
    cr_assert(cfg->healthcheck.enabled);
    cr_assert_eq(cfg->healthcheck.store, CFG_HC_MEMORY);
    cr_assert_str_eq(cfg->healthcheck.redis_address, "127.0.0.1:6379");
    cr_assert_null(cfg->healthcheck.redis_password);
    cr_assert_eq(cfg->healthcheck.redis_db, 0);
    cr_assert_str_eq(cfg->healthcheck.redis_key_prefix, "lodestar:");
    cr_assert_eq(cfg->healthcheck.redis_timeout_ms, 2000);
    cr_assert_eq(cfg->healthcheck.slot_num, 30, "Polaris' slotNum");
    cr_assert_eq(cfg->healthcheck.min_check_interval_ms, 1000);
    cr_assert_eq(cfg->healthcheck.max_check_interval_ms, 30000);
    cr_assert_eq(cfg->healthcheck.protect_threshold_percent, 0, "no protect threshold by default");
    cr_assert_eq(cfg->healthcheck.restart_grace_ms, 0);
    cr_assert_not(cfg->healthcheck.cleanup_enabled, "the clean-up job is off by default");
    cr_assert_eq(cfg->healthcheck.cleanup_unhealthy_for_s, 3600);
    cr_assert_null(cfg->healthcheck.cluster_node_id, "empty node_id: derived from the host");
    cr_assert_eq(cfg->healthcheck.cluster_announce_ttl_ms, 5000);
    cr_assert(cfg->naming.enabled && cfg->config.enabled && cfg->health.enabled);
    cr_assert_eq(cfg->config_worker.max_content_bytes, 20000u, "Polaris' contentMaxLength default");
    cr_assert_eq(cfg->config_worker.sync_interval_ms, 250);
    cr_assert_eq(cfg->config_worker.deleted_retention_s, 3600);
    cr_assert_eq(cfg->n_listeners, 3);
    cr_assert_str_eq(cfg->listeners[0].name, "polaris-http");
    cr_assert_str_eq(cfg->listeners[0].protocol, "polaris-http");
    cr_assert_eq(cfg->listeners[0].port, 8090);
    cr_assert_str_eq(cfg->listeners[1].name, "polaris-grpc-naming");
    cr_assert_str_eq(cfg->listeners[1].protocol, "polaris-grpc");
    cr_assert_eq(cfg->listeners[1].port, 8091);
    cr_assert_str_eq(cfg->listeners[2].name, "polaris-grpc-config");
    cr_assert_str_eq(cfg->listeners[2].protocol, "polaris-grpc");
    cr_assert_eq(cfg->listeners[2].port, 8093);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(cfg->listeners[i].address, "0.0.0.0");
        cr_assert(cfg->listeners[i].enabled);
    }
}

Test(config, empty_file_and_empty_mapping_give_defaults)
{
    unsetenv("LODESTAR_PG_DSN");
    static const char *const docs[] = {
        "",
        "{}\n",
        "# only a comment\n",
        "---\n",
        /* null values keep the defaults */
        "runtime_dir:\nlogging: ~\nsupervisor:\nstore: { dsn: null, embedded: }\nlisteners:\nworkers: {naming: }\n",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        cfg_t *cfg = load_ok(docs[i], "/srv/lodestar/lodestar.yaml");
        cr_assert_str_eq(cfg->path, "/srv/lodestar/lodestar.yaml", "document %zu", i);
        assert_defaults(cfg, "/srv/lodestar");
        cfg_free(cfg);
    }
}

Test(config, values_override_defaults)
{
    unsetenv("LODESTAR_PG_DSN");
    cfg_t *cfg = load_ok("supervisor: {shutdown_timeout_ms: 9000, drain_timeout_ms: 100, crash_loop_max: 2}\n"
                         "ipc: {max_frame_bytes: 1024, request_timeout_ms: 1}\n"
                         "store: {dsn: 'host=db dbname=x', connect_timeout_ms: 250}\n"
                         "healthcheck: {enabled: no, store: redis, redis: {address: 'unix:/run/redis.sock', "
                         "password: s3cret, db: 7}}\n"
                         "workers: {naming: {enabled: off}, health: {enabled: false}}\n"
                         "listeners:\n"
                         "  - {name: h1, protocol: polaris-http, address: '::1', port: 1, enabled: No}\n"
                         "  - {name: h2, protocol: polaris-http, address: '::1', port: 1}\n"
                         "  - {name: g, protocol: polaris-grpc, port: 65535}\n",
                         "/etc/lodestar/lodestar.yaml");
    cr_assert_eq(cfg->supervisor.shutdown_timeout_ms, 9000);
    cr_assert_eq(cfg->supervisor.drain_timeout_ms, 100);
    cr_assert_eq(cfg->supervisor.crash_loop_max, 2);
    cr_assert_eq(cfg->supervisor.ping_interval_ms, 2000, "untouched keys keep defaults");
    cr_assert_eq(cfg->ipc.max_frame_bytes, 1024u);
    cr_assert_eq(cfg->ipc.request_timeout_ms, 1);
    cr_assert_str_eq(cfg->store.dsn, "host=db dbname=x");
    cr_assert_eq(cfg->store.connect_timeout_ms, 250);
    cr_assert_not(cfg->healthcheck.enabled);
    cr_assert_eq(cfg->healthcheck.store, CFG_HC_REDIS);
    cr_assert_str_eq(cfg->healthcheck.redis_address, "unix:/run/redis.sock");
    cr_assert_str_eq(cfg->healthcheck.redis_password, "s3cret");
    cr_assert_eq(cfg->healthcheck.redis_db, 7);
    cr_assert_not(cfg->naming.enabled);
    cr_assert(cfg->config.enabled);
    cr_assert_not(cfg->health.enabled);
    cr_assert_eq(cfg->n_listeners, 3);
    cr_assert_str_eq(cfg->listeners[0].address, "::1");
    cr_assert_not(cfg->listeners[0].enabled, "a disabled listener may share a socket with an enabled one");
    cr_assert(cfg->listeners[1].enabled);
    cr_assert_str_eq(cfg->listeners[2].address, "0.0.0.0", "address defaults to 0.0.0.0");
    cr_assert_eq(cfg->listeners[2].port, 65535);
    char *dsn = cfg_store_dsn(cfg);
    cr_assert_str_eq(dsn, "host=db dbname=x");
    free(dsn);
    cfg_free(cfg);

    cfg = load_ok("listeners: []\n", "/x/l.yaml");
    cr_assert_eq(cfg->n_listeners, 0, "an empty sequence means no listeners");
    cfg_free(cfg);
}

/* workers.config (the config worker's own settings) */
Test(config, config_worker_settings)
{
    unsetenv("LODESTAR_PG_DSN");
    cfg_t *cfg = load_ok("workers:\n"
                         "  config: {enabled: false, max_content_bytes: 1048576, sync_interval_ms: 40,"
                         " deleted_retention_s: 2}\n",
                         "/srv/c.yaml");
    cr_assert_not(cfg->config.enabled);
    cr_assert_eq(cfg->config_worker.max_content_bytes, 1048576u);
    cr_assert_eq(cfg->config_worker.sync_interval_ms, 40);
    cr_assert_eq(cfg->config_worker.deleted_retention_s, 2);
    cr_assert(cfg->naming.enabled && cfg->health.enabled, "the other workers are untouched");
    cfg_free(cfg);
    /* small frames lower the default limit in the worker instead of failing */
    cfg = load_ok("ipc: {max_frame_bytes: 1024}\n", "/srv/c.yaml");
    cr_assert_eq(cfg->config_worker.max_content_bytes, 20000u);
    cfg_free(cfg);
}

Test(config_errors, config_worker_settings)
{
    EXPECT_BUFFER("ipc: {max_frame_bytes: 131072}\n"
                  "workers:\n"
                  "  config:\n"
                  "    max_content_bytes: 40000\n",
                  "c.yaml",
                  "c.yaml:4:24: workers.config.max_content_bytes: 40000 bytes do not fit IPC frames of "
                  "ipc.max_frame_bytes (131072): twice the content plus 64 KiB must fit");
    EXPECT_BUFFER("workers:\n"
                  "  config:\n"
                  "    max_content_bytes: 0\n"
                  "    sync_interval_ms: fast\n"
                  "    colour: blue\n",
                  "c.yaml", "c.yaml:3:24: workers.config.max_content_bytes: expected an integer 1..67108864, got \"0\"",
                  "c.yaml:4:23: workers.config.sync_interval_ms: expected an integer 1..86400000, got \"fast\"",
                  "c.yaml:5:5: workers.config.colour: unknown key (allowed: enabled, max_content_bytes, "
                  "sync_interval_ms, deleted_retention_s)");
}

Test(config, relative_paths_resolve_against_config_dir)
{
    char tmpl[] = "/tmp/lodestar-cfg-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    cr_assert_eq(chdir(tmpl), 0);
    char cwd[PATH_MAX];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));

    cfg_t *cfg = load_ok("runtime_dir: ./run/../rt\n"
                         "logging:\n"
                         "  file: logs/lodestar.log\n"
                         "  processes:\n"
                         "    naming: { file: naming.log }\n"
                         "store:\n"
                         "  embedded:\n"
                         "    data_dir: ../pgdata\n"
                         "    bin_dir: /opt//pg/bin/\n",
                         "conf/./sub//lodestar.yaml");
    char want[PATH_MAX * 2];
    snprintf(want, sizeof want, "%s/conf/sub/lodestar.yaml", cwd);
    cr_assert_str_eq(cfg->path, want, "the file path is made absolute against the cwd");
    snprintf(want, sizeof want, "%s/conf/sub", cwd);
    cr_assert_str_eq(cfg->base_dir, want);
    snprintf(want, sizeof want, "%s/conf/sub/rt", cwd);
    cr_assert_str_eq(cfg->runtime_dir, want);
    snprintf(want, sizeof want, "%s/conf/sub/logs/lodestar.log", cwd);
    cr_assert_str_eq(cfg->log.file, want);
    snprintf(want, sizeof want, "%s/conf/sub/naming.log", cwd);
    cr_assert_str_eq(cfg_log_for(cfg, "naming")->file, want);
    snprintf(want, sizeof want, "%s/conf/pgdata", cwd);
    cr_assert_str_eq(cfg->store.embedded.data_dir, want);
    cr_assert_str_eq(cfg->store.embedded.bin_dir, "/opt/pg/bin", "absolute paths are only cleaned");
    cfg_free(cfg);

    /* a bare file name: its directory is the cwd */
    cfg = load_ok("{}", "lodestar.yaml");
    cr_assert_str_eq(cfg->base_dir, cwd);
    snprintf(want, sizeof want, "%s/run", cwd);
    cr_assert_str_eq(cfg->runtime_dir, want);
    cfg_free(cfg);

    /* a file in / */
    cfg = load_ok("runtime_dir: run\n", "/lodestar.yaml");
    cr_assert_str_eq(cfg->base_dir, "/");
    cr_assert_str_eq(cfg->runtime_dir, "/run");
    cfg_free(cfg);

    cr_assert_eq(chdir("/"), 0);
    cr_assert_eq(rmdir(tmpl), 0);
}

Test(config, process_log_overrides_inherit_global_settings)
{
    cfg_t *cfg = load_ok("logging:\n"
                         "  level: warning\n"
                         "  file: /var/log/lodestar/all.log\n"
                         "  processes:\n"
                         "    naming: { level: debug }\n"
                         "    config: { file: /var/log/lodestar/config.log }\n"
                         "    health: { file: '' }\n"
                         "    polaris-http: ~\n"
                         "listeners:\n"
                         "  - { name: http, protocol: polaris-http, port: 8090 }\n",
                         "/etc/lodestar/lodestar.yaml");
    cr_assert_eq(cfg->log.level, LOG_LVL_WARN);
    cr_assert_str_eq(cfg->log.file, "/var/log/lodestar/all.log");
    cr_assert_eq(cfg->n_proc_logs, 4);

    const cfg_log_t *l = cfg_log_for(cfg, "naming");
    cr_assert_eq(l->level, LOG_LVL_DEBUG);
    cr_assert_str_eq(l->file, "/var/log/lodestar/all.log", "file inherited from the global setting");

    l = cfg_log_for(cfg, "config");
    cr_assert_eq(l->level, LOG_LVL_WARN, "level inherited from the global setting");
    cr_assert_str_eq(l->file, "/var/log/lodestar/config.log");

    l = cfg_log_for(cfg, "health");
    cr_assert_null(l->file, "an explicit empty file means stderr");

    l = cfg_log_for(cfg, "polaris-http");
    cr_assert_eq(l->level, LOG_LVL_WARN);
    cr_assert_str_eq(l->file, "/var/log/lodestar/all.log");

    cr_assert_eq(cfg_log_for(cfg, "supervisor"), &cfg->log);
    cfg_free(cfg);
}

Test(config, environment_expansion)
{
    unsetenv("LODESTAR_PG_DSN");
    setenv("LODESTAR_TEST_DIR", "/opt/lodestar", 1);
    setenv("LODESTAR_TEST_PORT", "9100", 1);
    setenv("LODESTAR_TEST_HOST", "db.internal", 1);
    setenv("LODESTAR_TEST_EMPTY", "", 1);
    setenv("LODESTAR_TEST_BOOL", "off", 1);
    cfg_t *cfg = load_ok("runtime_dir: ${LODESTAR_TEST_DIR}/run\n"
                         "store:\n"
                         "  dsn: \"host=${LODESTAR_TEST_HOST} port=${LODESTAR_TEST_PORT} dbname=x\"\n"
                         "  embedded: { port: '${LODESTAR_TEST_PORT}' }\n"
                         "healthcheck:\n"
                         "  enabled: ${LODESTAR_TEST_BOOL}\n"
                         "  redis: { password: \"${LODESTAR_TEST_EMPTY}\", address: \"a$${b}$c$\" }\n",
                         "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->runtime_dir, "/opt/lodestar/run");
    cr_assert_str_eq(cfg->store.dsn, "host=db.internal port=9100 dbname=x");
    cr_assert_eq(cfg->store.embedded.port, 9100, "expansion applies before integers are parsed");
    cr_assert_not(cfg->healthcheck.enabled);
    cr_assert_null(cfg->healthcheck.redis_password, "a variable set to \"\" expands to the empty string");
    cr_assert_str_eq(cfg->healthcheck.redis_address, "a${b}$c$", "$${ is a literal ${, a lone $ stays");
    cfg_free(cfg);
}

Test(config, environment_expansion_errors)
{
    unsetenv("LODESTAR_TEST_NOPE");
    EXPECT_BUFFER("store:\n"
                  "  dsn: \"${LODESTAR_TEST_NOPE}\"\n"
                  "runtime_dir: /x/${unterminated\n"
                  "logging: { file: \"${1BAD}\" }\n",
                  "env.yaml",
                  "env.yaml:2:8: store.dsn: environment variable LODESTAR_TEST_NOPE is not set",
                  "env.yaml:3:14: runtime_dir: unterminated \"${\" in value",
                  "env.yaml:4:18: logging.file: invalid environment variable name \"1BAD\"");
}

Test(config, undefined_env_file)
{
    unsetenv("LODESTAR_TEST_UNDEFINED_USER");
    EXPECT_FILE("undefined_env.yaml",
                "undefined_env.yaml:2:8: store.dsn: environment variable LODESTAR_TEST_UNDEFINED_USER is not set");
}

Test(config, pg_dsn_environment_override)
{
    setenv("LODESTAR_PG_DSN", "host=db1 dbname=lodestar password=secret", 1);
    cfg_t *cfg = load_ok("store: { dsn: 'host=other' }\n", "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->store.dsn, "host=db1 dbname=lodestar password=secret");
    char *dsn = cfg_store_dsn(cfg);
    cr_assert_str_eq(dsn, "host=db1 dbname=lodestar password=secret");
    free(dsn);
    cfg_free(cfg);

    /* also overrides an embedded configuration */
    cfg = load_ok("", "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->store.dsn, "host=db1 dbname=lodestar password=secret");
    cfg_free(cfg);

    /* and can be referenced explicitly */
    cfg = load_ok("store: { dsn: '${LODESTAR_PG_DSN}' }\n", "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->store.dsn, "host=db1 dbname=lodestar password=secret");
    cfg_free(cfg);

    /* set but empty: no override */
    setenv("LODESTAR_PG_DSN", "", 1);
    cfg = load_ok("store: { dsn: 'host=other' }\n", "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->store.dsn, "host=other");
    cfg_free(cfg);
    cfg = load_ok("store: { dsn: '' }\n", "/etc/lodestar/lodestar.yaml");
    cr_assert_null(cfg->store.dsn, "empty dsn means embedded");
    cfg_free(cfg);

    unsetenv("LODESTAR_PG_DSN");
    cfg = load_ok("store: { dsn: 'host=other' }\n", "/etc/lodestar/lodestar.yaml");
    cr_assert_str_eq(cfg->store.dsn, "host=other");
    cfg_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

Test(config, store_dsn_and_socket_paths)
{
    unsetenv("LODESTAR_PG_DSN");
    cfg_t *cfg = load_ok("runtime_dir: /run/lodestar\nstore: { embedded: { port: 5433 } }\n", "/etc/l/l.yaml");
    char *s = cfg_store_dsn(cfg);
    cr_assert_str_eq(s, "host=/run/lodestar/pg port=5433 dbname=lodestar user=lodestar");
    free(s);
    s = cfg_pg_socket_dir(cfg);
    cr_assert_str_eq(s, "/run/lodestar/pg");
    free(s);
    s = cfg_ipc_path(cfg, "naming");
    cr_assert_str_eq(s, "/run/lodestar/naming.sock");
    free(s);
    s = cfg_control_path(cfg);
    cr_assert_str_eq(s, "/run/lodestar/control.sock");
    free(s);
    cfg_free(cfg);

    /* a runtime_dir with a space or quote is quoted for libpq */
    cfg = load_ok("runtime_dir: \"/srv/my dir/it's\"\n", "/etc/l/l.yaml");
    s = cfg_store_dsn(cfg);
    cr_assert_str_eq(s, "host='/srv/my dir/it\\'s/pg' port=5432 dbname=lodestar user=lodestar");
    free(s);
    cfg_free(cfg);
}

Test(config, listener_socket_differs)
{
    cfg_listener_t a = {.name = "a", .protocol = "polaris-http", .address = "0.0.0.0", .port = 8090, .enabled = true};
    cfg_listener_t b = a;
    b.name = "renamed";
    b.enabled = false;
    cr_assert_not(cfg_listener_socket_differs(&a, &b), "name and enabled do not change the socket");
    b.port = 8091;
    cr_assert(cfg_listener_socket_differs(&a, &b));
    b.port = 8090;
    b.address = "127.0.0.1";
    cr_assert(cfg_listener_socket_differs(&a, &b));
    a.address = "::";
    b.address = "0:0::0";
    cr_assert_not(cfg_listener_socket_differs(&a, &b), "addresses compare by value, not spelling");
    b.address = "0.0.0.0";
    cr_assert(cfg_listener_socket_differs(&a, &b), "IPv4 and IPv6 wildcards are different sockets");
}

Test(config, errors_are_capped_and_counted)
{
    char *yaml = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&yaml, &n);
    for (int i = 0; i < CFG_MAX_ERRORS + 6; i++)
        fprintf(m, "bogus_%d: 1\n", i);
    fclose(m);
    cfg_t *cfg = (cfg_t *)1;
    cfg_errors_t errs = {0};
    cr_assert_eq(cfg_load_buffer(yaml, n, "many.yaml", &cfg, &errs), -1);
    cr_assert_null(cfg);
    cr_assert_eq(errs.count, CFG_MAX_ERRORS);
    cr_assert_eq(errs.dropped, 6);
    cr_assert_str_eq(errs.msgs[0], "many.yaml:1:1: bogus_0: unknown key (allowed: runtime_dir, logging, supervisor, "
                                   "ipc, store, healthcheck, workers, listeners)");
    cr_assert(strncmp(errs.msgs[CFG_MAX_ERRORS - 1], "many.yaml:64:1: bogus_63: ", 26) == 0, "got %s",
              errs.msgs[CFG_MAX_ERRORS - 1]);

    /* loading again resets the list */
    cr_assert_eq(cfg_load_buffer("{}", 2, "ok.yaml", &cfg, &errs), 0);
    cr_assert_eq(errs.count, 0);
    cr_assert_eq(errs.dropped, 0);
    cfg_free(cfg);
    cfg_errors_clear(&errs);
    free(yaml);
    cfg_free(NULL);
}

Test(config, missing_file)
{
    enter_config_data();
    cfg_t *cfg = (cfg_t *)1;
    cfg_errors_t errs = {0};
    cr_assert_eq(cfg_load_file("does_not_exist.yaml", &cfg, &errs), -1);
    cr_assert_null(cfg);
    cr_assert_eq(errs.count, 1);
    cr_assert_str_eq(errs.msgs[0], "does_not_exist.yaml: cannot open: No such file or directory");
    cfg_errors_clear(&errs);
}

Test(config, runtime_dir_too_long)
{
    char yaml[256];
    snprintf(yaml, sizeof yaml, "runtime_dir: /%0100d\n", 0);
    cfg_t *cfg = (cfg_t *)1;
    cfg_errors_t errs = {0};
    cr_assert_eq(cfg_load_buffer(yaml, strlen(yaml), "long.yaml", &cfg, &errs), -1);
    cr_assert_eq(errs.count, 1);
    cr_assert(strncmp(errs.msgs[0], "long.yaml:1:14: runtime_dir: \"/0000", 35) == 0, "got %s", errs.msgs[0]);
    cr_assert(strstr(errs.msgs[0], "is too long for Unix socket paths (at most 80 bytes)") != NULL, "got %s",
              errs.msgs[0]);
    cfg_errors_clear(&errs);
}

Test(config, invalid_utf8_is_a_syntax_error)
{
    EXPECT_BUFFER("runtime_dir: ok\nlogging: \xff\xfe\n", "utf8.yaml",
                  "utf8.yaml:2:10: (syntax): invalid leading UTF-8 octet");
}

/* ------------------------------------------------------------------ */
/* Broken files: exact error lines                                     */
/* ------------------------------------------------------------------ */

Test(config_errors, unknown_top_level_key)
{
    EXPECT_FILE("unknown_top_key.yaml", "unknown_top_key.yaml:3:1: listen: unknown key (allowed: runtime_dir, "
                                        "logging, supervisor, ipc, store, healthcheck, workers, listeners)");
}

Test(config_errors, unknown_nested_key)
{
    EXPECT_FILE("unknown_nested_key.yaml",
                "unknown_nested_key.yaml:3:3: supervisor.drain_timeot_ms: unknown key (allowed: shutdown_timeout_ms, "
                "drain_timeout_ms, restart_backoff_initial_ms, restart_backoff_max_ms, crash_loop_window_ms, "
                "crash_loop_max, ready_timeout_ms, ping_interval_ms)",
                "unknown_nested_key.yaml:6:5: store.embedded.datadir: unknown key (allowed: data_dir, bin_dir, user, "
                "port)");
}

Test(config_errors, wrong_type_for_port)
{
    EXPECT_FILE("bad_port_type.yaml",
                "bad_port_type.yaml:7:11: listeners[1].port: expected an integer 1..65535, got \"http\"");
}

Test(config_errors, port_out_of_range)
{
    EXPECT_FILE("port_out_of_range.yaml",
                "port_out_of_range.yaml:2:46: listeners[0].port: expected an integer 1..65535, got \"70000\"",
                "port_out_of_range.yaml:3:46: listeners[1].port: expected an integer 1..65535, got \"0\"",
                "port_out_of_range.yaml:4:46: listeners[2].port: expected an integer 1..65535, got \"-1\"",
                "port_out_of_range.yaml:7:11: store.embedded.port: expected an integer 1..65535, got \"65536\"");
}

Test(config_errors, bad_boolean)
{
    EXPECT_FILE("bad_bool.yaml",
                "bad_bool.yaml:2:12: healthcheck.enabled: expected a boolean (true/false/yes/no/on/off), got \"maybe\"",
                "bad_bool.yaml:5:22: workers.config.enabled: expected a boolean (true/false/yes/no/on/off), got "
                "\"2\"");
}

Test(config_errors, duplicate_listener_name)
{
    EXPECT_FILE("dup_listener_name.yaml", "dup_listener_name.yaml:8:11: listeners[2].name: duplicate listener name "
                                          "\"http\" (also listeners[0] at line 2)");
}

Test(config_errors, duplicate_address_and_port)
{
    EXPECT_FILE("dup_address_port.yaml",
                "dup_address_port.yaml:3:68: listeners[1].port: 127.0.0.1 port 8090 conflicts with listeners[0] "
                "(one, 127.0.0.1 port 8090)",
                "dup_address_port.yaml:5:68: listeners[3].port: 10.0.0.1 port 8091 conflicts with listeners[2] "
                "(three, 0.0.0.0 port 8091)",
                "dup_address_port.yaml:7:64: listeners[5].port: ::0 port 9000 conflicts with listeners[4] (five, :: "
                "port 9000)");
}

Test(config_errors, unknown_protocol)
{
    EXPECT_FILE("unknown_protocol.yaml", "unknown_protocol.yaml:3:15: listeners[0].protocol: unknown protocol "
                                         "\"eureka\" (known: polaris-http, polaris-grpc)");
}

Test(config_errors, bad_log_level)
{
    EXPECT_FILE("bad_log_level.yaml",
                "bad_log_level.yaml:2:10: logging.level: expected a log level (debug, info, notice, warn, warning, "
                "error), got \"verbose\"",
                "bad_log_level.yaml:5:14: logging.processes.naming.level: expected a log level (debug, info, notice, "
                "warn, warning, error), got \"loud\"");
}

Test(config_errors, redis_store_without_address)
{
    EXPECT_FILE("redis_no_address.yaml",
                "redis_no_address.yaml:3:10: healthcheck.redis.address: required when healthcheck.store is redis");
}

Test(config, healthcheck_knobs)
{
    cfg_t *cfg = load_ok("healthcheck:\n"
                         "  store: redis\n"
                         "  redis: {address: '127.0.0.1:7000', key_prefix: 'ls-test:', timeout_ms: 300}\n"
                         "  slot_num: 300\n"
                         "  min_check_interval_ms: 100\n"
                         "  max_check_interval_ms: 3000\n"
                         "  protect_threshold_percent: 40\n"
                         "  restart_grace_ms: 2500\n"
                         "  cleanup: {enabled: yes, unhealthy_for_s: 5}\n"
                         "  cluster: {node_id: node-a, announce_ttl_ms: 1500}\n",
                         "/etc/lodestar/lodestar.yaml");
    const cfg_healthcheck_t *hc = &cfg->healthcheck;
    cr_assert_eq(hc->store, CFG_HC_REDIS);
    cr_assert_str_eq(hc->redis_key_prefix, "ls-test:");
    cr_assert_eq(hc->redis_timeout_ms, 300);
    cr_assert_eq(hc->slot_num, 300);
    cr_assert_eq(hc->min_check_interval_ms, 100);
    cr_assert_eq(hc->max_check_interval_ms, 3000);
    cr_assert_eq(hc->protect_threshold_percent, 40);
    cr_assert_eq(hc->restart_grace_ms, 2500);
    cr_assert(hc->cleanup_enabled);
    cr_assert_eq(hc->cleanup_unhealthy_for_s, 5);
    cr_assert_str_eq(hc->cluster_node_id, "node-a");
    cr_assert_eq(hc->cluster_announce_ttl_ms, 1500);
    cfg_free(cfg);
}

Test(config_errors, healthcheck_intervals)
{
    EXPECT_BUFFER("healthcheck:\n  min_check_interval_ms: 5000\n  max_check_interval_ms: 2000\n", "hc.yaml",
                  "hc.yaml:2:26: healthcheck.min_check_interval_ms: min_check_interval_ms (5000) must not exceed "
                  "max_check_interval_ms (2000)");
    EXPECT_BUFFER("healthcheck: {slot_num: 100, max_check_interval_ms: 50, min_check_interval_ms: 10}\n", "hc.yaml",
                  "hc.yaml:1:25: healthcheck.slot_num: 100 slots over max_check_interval_ms 50 would tick faster "
                  "than 1 ms");
    EXPECT_BUFFER("healthcheck: {protect_threshold_percent: 101, slot_num: 1, redis: {key_prefix: ''}}\n", "hc.yaml",
                  "hc.yaml:1:42: healthcheck.protect_threshold_percent: expected an integer 0..100, got \"101\"",
                  "hc.yaml:1:57: healthcheck.slot_num: expected an integer 2..1000000, got \"1\"",
                  "hc.yaml:1:80: healthcheck.redis.key_prefix: must not be empty");
}

Test(config_errors, bad_ip_address)
{
    EXPECT_FILE("bad_address.yaml",
                "bad_address.yaml:4:14: listeners[0].address: expected an IPv4 or IPv6 address, got \"localhost\"",
                "bad_address.yaml:8:14: listeners[1].address: expected an IPv4 or IPv6 address, got \"300.1.2.3\"");
}

Test(config_errors, yaml_syntax_error)
{
    EXPECT_FILE("syntax_error.yaml", "syntax_error.yaml:3:2: (syntax): did not find expected key (while parsing a "
                                     "block mapping at line 1, column 1)");
}

Test(config_errors, listeners_not_a_sequence)
{
    EXPECT_FILE("listeners_not_sequence.yaml",
                "listeners_not_sequence.yaml:2:3: listeners: expected a sequence of listeners, got a mapping");
}

Test(config_errors, wrong_types)
{
    EXPECT_FILE("wrong_types.yaml", "wrong_types.yaml:1:14: runtime_dir: expected a path, got a sequence",
                "wrong_types.yaml:2:13: supervisor: expected a mapping, got \"5000\"",
                "wrong_types.yaml:5:5: ipc.max_frame_bytes: expected an integer 1024..1073741824, got a mapping",
                "wrong_types.yaml:6:23: ipc.request_timeout_ms: expected an integer 1..86400000, got \"abc\"");
}

Test(config_errors, multiple_errors_all_reported)
{
    EXPECT_FILE("multiple_errors.yaml",
                "multiple_errors.yaml:3:1: loging: unknown key (allowed: runtime_dir, logging, supervisor, ipc, "
                "store, healthcheck, workers, listeners)",
                "multiple_errors.yaml:6:24: supervisor.shutdown_timeout_ms: expected an integer 1..86400000, got "
                "\"0\"",
                "multiple_errors.yaml:7:27: supervisor.restart_backoff_max_ms: expected an integer 1..86400000, got "
                "\"1.5\"",
                "multiple_errors.yaml:9:20: ipc.max_frame_bytes: expected an integer 1024..1073741824, got \"512\"",
                "multiple_errors.yaml:11:12: healthcheck.enabled: expected a boolean (true/false/yes/no/on/off), got "
                "\"perhaps\"",
                "multiple_errors.yaml:12:10: healthcheck.store: expected memory or redis, got \"etcd\"",
                "multiple_errors.yaml:14:11: listeners[0].name: invalid listener name \"Polaris_HTTP\" (use "
                "lowercase letters, digits and '-')",
                "multiple_errors.yaml:18:5: listeners[1].name: required key is missing",
                "multiple_errors.yaml:18:15: listeners[1].protocol: unknown protocol \"nacos\" (known: polaris-http, "
                "polaris-grpc)",
                "multiple_errors.yaml:20:11: listeners[1].port: expected an integer 1..65535, got \"99999\"",
                "multiple_errors.yaml:21:5: listeners[1].tls: unknown key (allowed: name, protocol, address, port, "
                "enabled)");
}

Test(config_errors, unknown_process_role)
{
    EXPECT_FILE("unknown_role.yaml",
                "unknown_role.yaml:4:5: logging.processes.gateway: unknown process role \"gateway\" (known: "
                "supervisor, naming, config, health, polaris-http)",
                "unknown_role.yaml:5:5: logging.processes.polaris-grpc: no listener uses protocol \"polaris-grpc\"");
}

Test(config_errors, missing_listener_keys)
{
    EXPECT_FILE("missing_listener_keys.yaml",
                "missing_listener_keys.yaml:2:5: listeners[0].name: required key is missing",
                "missing_listener_keys.yaml:2:5: listeners[0].protocol: required key is missing",
                "missing_listener_keys.yaml:2:5: listeners[0].port: required key is missing",
                "missing_listener_keys.yaml:6:5: listeners[2]: expected a mapping (name, protocol, address, port, "
                "enabled), got \"just-a-string\"");
}

Test(config_errors, duplicate_keys)
{
    EXPECT_FILE("duplicate_key.yaml",
                "duplicate_key.yaml:3:3: supervisor.drain_timeout_ms: duplicate key (first given at line 2)",
                "duplicate_key.yaml:7:5: logging.processes.naming: duplicate key (first given at line 6)");
}

Test(config_errors, inconsistent_timeouts)
{
    EXPECT_FILE("timeouts.yaml",
                "timeouts.yaml:3:21: supervisor.drain_timeout_ms: drain_timeout_ms (3000) must be less than "
                "shutdown_timeout_ms (3000)",
                "timeouts.yaml:4:31: supervisor.restart_backoff_initial_ms: restart_backoff_initial_ms (5000) must "
                "not exceed restart_backoff_max_ms (1000)");
}

Test(config_errors, top_level_not_a_mapping)
{
    EXPECT_FILE("top_not_mapping.yaml", "top_not_mapping.yaml:1:1: (top level): expected a mapping, got a sequence");
    EXPECT_BUFFER("just text\n", "scalar.yaml", "scalar.yaml:1:1: (top level): expected a mapping, got \"just text\"");
}

Test(config_errors, more_than_one_document)
{
    EXPECT_FILE("two_documents.yaml",
                "two_documents.yaml:3:1: (syntax): expected a single YAML document, found another one");
}

Test(config_errors, empty_required_strings)
{
    EXPECT_BUFFER("runtime_dir: ''\nstore: { embedded: { user: \"\", bin_dir: '' } }\n", "empty.yaml",
                  "empty.yaml:1:14: runtime_dir: must not be empty",
                  "empty.yaml:2:28: store.embedded.user: must not be empty",
                  "empty.yaml:2:41: store.embedded.bin_dir: must not be empty");
}

Test(config, naming_worker_settings)
{
    cfg_t *cfg = load_ok("listeners: []\n", "/x/l.yaml");
    cr_assert(cfg->naming.enabled, "workers.naming.enabled defaults to true");
    cr_assert(cfg->naming_worker.auto_create_namespace, "auto_create_namespace defaults to true");
    cr_assert(cfg->naming_worker.auto_create_service, "auto_create_service defaults to true");
    cr_assert_eq(cfg->naming_worker.batch_max, 128);
    cr_assert_eq(cfg->naming_worker.batch_wait_ms, 32);
    cr_assert_eq(cfg->naming_worker.batch_queue_size, 10240);
    cr_assert_eq(cfg->naming_worker.sync_interval_ms, 250);
    cr_assert_eq(cfg->naming_worker.deleted_retention_s, 3600);
    cfg_free(cfg);

    cfg = load_ok("workers:\n"
                  "  naming:\n"
                  "    enabled: false\n"
                  "    auto_create_namespace: no\n"
                  "    auto_create_service: off\n"
                  "    batch: {max_batch: 7, wait_ms: 5, queue_size: 99}\n"
                  "    sync_interval_ms: 40\n"
                  "    deleted_retention_s: 2\n"
                  "listeners: []\n",
                  "/x/l.yaml");
    cr_assert_not(cfg->naming.enabled, "workers.naming.enabled still lands in cfg->naming");
    cr_assert_not(cfg->naming_worker.auto_create_namespace);
    cr_assert_not(cfg->naming_worker.auto_create_service);
    cr_assert_eq(cfg->naming_worker.batch_max, 7);
    cr_assert_eq(cfg->naming_worker.batch_wait_ms, 5);
    cr_assert_eq(cfg->naming_worker.batch_queue_size, 99);
    cr_assert_eq(cfg->naming_worker.sync_interval_ms, 40);
    cr_assert_eq(cfg->naming_worker.deleted_retention_s, 2);
    cr_assert(cfg->config.enabled && cfg->health.enabled, "the other workers are untouched");
    cfg_free(cfg);
}

Test(config_errors, naming_worker_settings)
{
    EXPECT_BUFFER("workers:\n"
                  "  naming:\n"
                  "    batch: {max_batch: 0, wait_ms: x}\n"
                  "    sync_interval_ms: -1\n"
                  "    colour: blue\n",
                  "n.yaml", "n.yaml:3:24: workers.naming.batch.max_batch: expected an integer 1..100000, got \"0\"",
                  "n.yaml:3:36: workers.naming.batch.wait_ms: expected an integer 1..60000, got \"x\"",
                  "n.yaml:4:23: workers.naming.sync_interval_ms: expected an integer 1..86400000, got \"-1\"",
                  "n.yaml:5:5: workers.naming.colour: unknown key (allowed: enabled, auto_create_namespace, "
                  "auto_create_service, sync_interval_ms, deleted_retention_s, batch)");
}
