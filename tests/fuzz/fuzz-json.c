/* Fuzz target: a request body through webd's strict JSON parser, then the field check of a route. What
 * the parser accepts must print and parse again (no key it let through twice, nothing too deep), and
 * the check must list at most JSON_PROBLEMS_MAX problems whatever the body holds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "webd/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const struct json_field fields[] = {
                { "title", JSON_STRING, true, 1, 200, false, true },
                { "description", JSON_STRING, false, 0, 2000, false, false },
                { "done", JSON_BOOL, false, 0, 0, false, false },
        };
        struct json_problems problems = {0};
        cJSON *j = NULL, *again = NULL;
        char *text;
        int r;

        if (json_parse((const char *)data, size, &j) < 0) {
                if (j)
                        abort();
                return 0;
        }
        r = json_check_object(j, fields, sizeof(fields) / sizeof(fields[0]), &problems);
        if (r >= 0 && (size_t)cJSON_GetArraySize(problems.fields) > JSON_PROBLEMS_MAX)
                abort();
        if (r >= 0 && (size_t)r != problems.count)
                abort();
        json_problems_clear(&problems);

        text = cJSON_PrintUnformatted(j);
        if (text) {
                if (json_parse(text, strlen(text), &again) < 0)
                        abort();
                cJSON_Delete(again);
                cJSON_free(text);
        }
        cJSON_Delete(j);
        return 0;
}
