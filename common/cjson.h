/* Cleanup helpers for cJSON values, in one place for every program that uses cJSON:
 * `_cleanup_(cJSON_Deletep) cJSON *root = NULL;` deletes a tree, `_cleanup_(cJSON_freep) char *text` frees
 * what cJSON_Print*() returned. Header-only: common/ itself does not link cJSON. */
#pragma once

#include <cjson/cJSON.h>

#include "common/macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)
DEFINE_TRIVIAL_CLEANUP_FUNC(char *, cJSON_free)
