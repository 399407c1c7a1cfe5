/* The API's route table: every public endpoint, its handler, rate class,
 * whether it takes a JSON body and whether the read cache answers it. */
#include <string.h>

#include "api.h"

const struct api_route api_routes[] = {
	{"GET", "/v1/campaigns", api_campaigns_list, API_RATE_DEFAULT, false, false, false, API_CACHE_LIST},
	{"POST", "/v1/campaigns", api_campaigns_create, API_RATE_DEFAULT, true, false, true, API_CACHE_NONE},
	{"GET", "/v1/campaigns/:id", api_campaigns_get, API_RATE_DEFAULT, false, false, false, API_CACHE_GET},
	{"PATCH", "/v1/campaigns/:id", api_campaigns_update, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},
	{"DELETE", "/v1/campaigns/:id", api_campaigns_delete, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/campaigns/:id/start", api_campaigns_start, API_RATE_DEFAULT, false, false, true, API_CACHE_NONE},
	{"POST", "/v1/campaigns/:id/pause", api_campaigns_pause, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/campaigns/:id/resume", api_campaigns_resume, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/campaigns/:id/cancel", api_campaigns_cancel, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"GET", "/v1/campaigns/:id/progress", api_campaigns_progress, API_RATE_DEFAULT, false, false, false, API_CACHE_PROGRESS},
	{"GET", "/v1/campaigns/:id/calls", api_campaigns_calls, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},

	{"GET", "/v1/contacts", api_contacts_list, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/contacts", api_contacts_create, API_RATE_DEFAULT, true, false, true, API_CACHE_NONE},
	{"POST", "/v1/contacts/bulk", api_contacts_bulk, API_RATE_BULK, true, false, false, API_CACHE_NONE},
	{"GET", "/v1/contacts/:id", api_contacts_get, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"PATCH", "/v1/contacts/:id", api_contacts_update, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},
	{"DELETE", "/v1/contacts/:id", api_contacts_delete, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},

	{"GET", "/v1/audiences", api_audiences_list, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/audiences", api_audiences_create, API_RATE_DEFAULT, true, false, true, API_CACHE_NONE},
	{"GET", "/v1/audiences/:id", api_audiences_get, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"PATCH", "/v1/audiences/:id", api_audiences_update, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},
	{"DELETE", "/v1/audiences/:id", api_audiences_delete, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"GET", "/v1/audiences/:id/contacts", api_audiences_list_contacts, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/audiences/:id/contacts", api_audiences_add_contacts, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},
	{"DELETE", "/v1/audiences/:id/contacts", api_audiences_remove_contacts, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},

	{"POST", "/v1/imports/api/bulk", api_imports_create, API_RATE_BULK, true, false, true, API_CACHE_NONE},
	{"GET", "/v1/imports/:id/status", api_imports_status, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},

	{"GET", "/v1/flows", api_flows_list, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"GET", "/v1/flows/:id", api_flows_get, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},

	{"POST", "/v1/carrier/status", api_carrier_status, API_RATE_NONE, false, true, false, API_CACHE_NONE},

	{"GET", "/v1/dnc", api_dnc_list, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"POST", "/v1/dnc", api_dnc_add, API_RATE_DEFAULT, true, false, false, API_CACHE_NONE},
	{"GET", "/v1/dnc/:phone", api_dnc_get, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
	{"DELETE", "/v1/dnc/:phone", api_dnc_remove, API_RATE_DEFAULT, false, false, false, API_CACHE_NONE},
};
const int api_routes_count = (int)(sizeof(api_routes) / sizeof(api_routes[0]));

/* Matches path against pattern, copying parameters into buf. */
static bool match(const char *pattern, const char *path, const char **params, char *buf, size_t buflen)
{
	const char *p = pattern, *u = path;
	size_t used = 0;
	int n = 0;

	while (*p && *u) {
		if (*p != '/' || *u != '/')
			return false;
		p++;
		u++;
		if (*p == ':') {
			size_t len = strcspn(u, "/");

			if (len == 0 || len > 128 || used + len + 1 > buflen || n >= API_MAX_PARAMS)
				return false;
			memcpy(buf + used, u, len);
			buf[used + len] = '\0';
			params[n++] = buf + used;
			used += len + 1;
			u += len;
			p += strcspn(p, "/");
		} else {
			size_t len = strcspn(p, "/");

			if (strncmp(p, u, len) != 0 || (u[len] != '/' && u[len] != '\0'))
				return false;
			p += len;
			u += len;
		}
	}
	/* One trailing slash is forgiven: "/v1/campaigns/" is "/v1/campaigns". */
	if (*u == '/' && u[1] == '\0')
		u++;
	return *p == '\0' && *u == '\0';
}

const struct api_route *api_route_match(const char *method, const char *path, const char **params,
					char *buf, size_t buflen, bool *path_known)
{
	*path_known = false;
	for (int i = 0; i < api_routes_count; i++) {
		if (!match(api_routes[i].pattern, path, params, buf, buflen))
			continue;
		if (!strcmp(api_routes[i].method, method))
			return &api_routes[i];
		*path_known = true;
	}
	return NULL;
}
