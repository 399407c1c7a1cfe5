/* Result rows to JSON objects, by a column spec. */
#include <stdlib.h>
#include <string.h>

#include "api.h"

json_t *api_row_json(PGresult *r, int row, const char *const *cols, int ncols)
{
	json_t *o = json_object();

	for (int i = 0; i < ncols && o; i++) {
		const char *spec = cols[i], *colon = strrchr(spec, ':');
		char name[64];
		json_t *v;
		size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
		char t = colon ? colon[1] : 's';

		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, spec, n);
		name[n] = '\0';
		if (PQgetisnull(r, row, i)) {
			v = json_null();
		} else {
			const char *text = PQgetvalue(r, row, i);

			switch (t) {
			case 'i':
				v = json_integer(strtoll(text, NULL, 10));
				break;
			case 'b':
				v = json_boolean(text[0] == 't');
				break;
			case 'j':
				v = json_loads(text, JSON_DECODE_ANY, NULL);
				if (v == NULL)
					v = json_null();
				break;
			default:
				v = json_string(text);
			}
		}
		json_object_set_new(o, name, v);
	}
	return o;
}

json_t *api_rows_json(PGresult *r, const char *const *cols, int ncols)
{
	json_t *a = json_array();

	for (int i = 0; i < PQntuples(r) && a; i++)
		json_array_append_new(a, api_row_json(r, i, cols, ncols));
	return a;
}

bool api_is_unique_violation(const char *sqlstate)
{
	return strcmp(sqlstate, "23505") == 0;
}
