/*
 * cc_view.h: the config model as Polaris v1 and Lodestar protobuf messages.
 *
 * Everything is allocated in the caller's arena and strings point into the
 * model (see cc_arena.h): pack or send the result before the model changes.
 * Times are Polaris text ("2006-01-02 15:04:05", local time).
 */
#ifndef LODESTAR_CC_VIEW_H
#define LODESTAR_CC_VIEW_H

#include <stdbool.h>

#include <jansson.h>

#include "cc_arena.h"
#include "cc_model.h"
#include "config.pb-c.h"
#include "polaris_config_file.pb-c.h"

/* Polaris ConfigFile.status values. */
#define CC_STATUS_SUCCESS "success"
#define CC_STATUS_TO_BE_RELEASED "to-be-released"
#define CC_STATUS_BETAING "betaing"
/* Polaris ConfigFileRelease.release_type of a beta release. */
#define CC_RELEASE_TYPE_GRAY "gray"

V1__ConfigFileTag **cc_view_tags(cc_arena_t *a, const cc_tags_t *t);
V1__ConfigFileGroup *cc_view_group(cc_arena_t *a, const cc_group_t *g);
/* The draft; status, release_time and release_by from its releases. */
V1__ConfigFile *cc_view_file(cc_arena_t *a, const cc_file_t *f, bool with_content);
/* with_content only takes effect for active releases (the only ones whose
 * content the model holds). */
V1__ConfigFileRelease *cc_view_release(cc_arena_t *a, const cc_file_t *f, const cc_release_t *r, bool with_content);
/* What clients of the file read (removed when nothing is published). */
Lodestar__ConfigFileState *cc_view_state(cc_arena_t *a, const cc_file_t *f);
Lodestar__ConfigBetaTarget *cc_view_target(cc_arena_t *a, const cc_beta_t *b);
/* One lodestar_config_release_history row (JSON, as the worker reads it). */
V1__ConfigFileReleaseHistory *cc_view_history(cc_arena_t *a, const json_t *row);

#endif
