/* dialerctl's database commands: migrate, org, apikey, flow. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "dl_db.h"
#include "dl_migrate.h"
#include "dl_util.h"

static const char SQL_ORG_INSERT[] =
	"INSERT INTO organizations (id, name, quota_minutes) VALUES ($1, $2, $3)";
static const char SQL_ORG_QUOTA[] =
	"UPDATE organizations SET quota_minutes = $2 WHERE id = $1";
static const char SQL_KEY_INSERT[] =
	"INSERT INTO api_keys (id, organization_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)";
static const char SQL_KEY_REVOKE[] =
	"UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL";
static const char SQL_FLOW_INSERT[] =
	"INSERT INTO flows (id, organization_id, name, voice_url) VALUES ($1, $2, $3, $4)"
	" RETURNING to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

const char *ctl_opt(int argc, char **argv, const char *name)
{
	for (int i = 0; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return NULL;
}

PGconn *ctl_connect(const struct dl_config *cfg)
{
	PGconn *conn = NULL;

	if (dl_db_connect(cfg->db_url, cfg->db_connect_timeout_s, &conn) < 0) {
		fprintf(stderr, "dialerctl: cannot connect to the database (db.url)\n");
		return NULL;
	}
	return conn;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

int ctl_migrate(const struct dl_config *cfg, int argc, char **argv)
{
	PGconn *conn;
	int applied = 0, rc = 1;

	(void)argc;
	(void)argv;
	conn = ctl_connect(cfg);
	if (conn == NULL)
		return 1;
	if (dl_migrate(conn, &applied) == 0) {
		print_json(json_pack("{s:i, s:i}", "applied", applied, "version",
				     dl_migrations[dl_migrations_count - 1].version));
		rc = 0;
	} else {
		fprintf(stderr, "dialerctl: migration failed\n");
	}
	PQfinish(conn);
	return rc;
}

/* Creates a key for org; writes the id and the key (shown once). */
static int key_create(PGconn *conn, const char *org, char id[DL_ID_MAX], char key[48])
{
	char secret[33], hash[65], prefix[16];
	const char *params[4] = {id, org, hash, prefix};
	PGresult *r;

	if (dl_random_alnum(secret, 32) < 0)
		return -EIO;
	snprintf(key, 48, "sk_live_%s", secret);
	dl_sha256_hex(key, strlen(key), hash);
	snprintf(prefix, sizeof(prefix), "%.12s", key);
	dl_id_new("key", id);
	r = dl_db_exec(conn, SQL_KEY_INSERT, 4, params, NULL);
	if (r == NULL)
		return -EIO;
	PQclear(r);
	return 0;
}

static int parse_minutes(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

int ctl_org(const struct dl_config *cfg, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	const char *name = ctl_opt(argc, argv, "--name");
	const char *quota = ctl_opt(argc, argv, "--quota-minutes");
	PGconn *conn = NULL;
	char org[DL_ID_MAX], key_id[DL_ID_MAX], key[48];
	long minutes = 1000;
	int rc = 1;

	if (!strcmp(sub, "quota")) {
		const char *o = ctl_opt(argc, argv, "--org"), *m = ctl_opt(argc, argv, "--minutes");
		const char *params[2] = {o, m};
		PGresult *r;

		if (!o || !m || parse_minutes(m, &minutes)) {
			fprintf(stderr, "dialerctl: org quota needs --org ORG --minutes M (M >= 0)\n");
			return 2;
		}
		if ((conn = ctl_connect(cfg)) == NULL)
			return 1;
		r = dl_db_exec(conn, SQL_ORG_QUOTA, 2, params, NULL);
		if (r && strcmp(PQcmdTuples(r), "1") == 0) {
			print_json(json_pack("{s:s, s:I}", "organizationId", o, "quotaMinutes", (json_int_t)minutes));
			rc = 0;
		} else {
			fprintf(stderr, "dialerctl: no organization %s\n", o);
		}
		PQclear(r);
		PQfinish(conn);
		return rc;
	}
	if (strcmp(sub, "create") || name == NULL || !*name || strlen(name) > 200 ||
	    (quota && parse_minutes(quota, &minutes))) {
		fprintf(stderr, "dialerctl: org create needs --name N (1-200 chars) [--quota-minutes M >= 0]\n");
		return 2;
	}
	if ((conn = ctl_connect(cfg)) == NULL)
		return 1;
	{
		char q[32];
		const char *params[3] = {org, name, q};
		PGresult *r;

		snprintf(q, sizeof(q), "%ld", minutes);
		dl_id_new("org", org);
		if (dl_db_cmd(conn, "BEGIN") < 0)
			goto out;
		r = dl_db_exec(conn, SQL_ORG_INSERT, 3, params, NULL);
		if (r == NULL)
			goto out;
		PQclear(r);
		if (key_create(conn, org, key_id, key) < 0 || dl_db_cmd(conn, "COMMIT") < 0)
			goto out;
	}
	print_json(json_pack("{s:s, s:s, s:s}", "organizationId", org, "apiKey", key, "apiKeyId", key_id));
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "dialerctl: could not create the organization\n");
	PQfinish(conn);
	return rc;
}

int ctl_apikey(const struct dl_config *cfg, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	PGconn *conn;
	int rc = 1;

	if (!strcmp(sub, "create")) {
		const char *org = ctl_opt(argc, argv, "--org");
		char id[DL_ID_MAX], key[48];

		if (org == NULL) {
			fprintf(stderr, "dialerctl: apikey create needs --org ORG\n");
			return 2;
		}
		if ((conn = ctl_connect(cfg)) == NULL)
			return 1;
		if (key_create(conn, org, id, key) == 0) {
			print_json(json_pack("{s:s, s:s, s:s}", "organizationId", org, "apiKeyId", id, "apiKey", key));
			rc = 0;
		} else {
			fprintf(stderr, "dialerctl: could not create a key for %s\n", org);
		}
		PQfinish(conn);
		return rc;
	}
	if (!strcmp(sub, "revoke")) {
		const char *id = ctl_opt(argc, argv, "--id");
		PGresult *r;

		if (id == NULL) {
			fprintf(stderr, "dialerctl: apikey revoke needs --id KEY_ID\n");
			return 2;
		}
		if ((conn = ctl_connect(cfg)) == NULL)
			return 1;
		r = dl_db_exec(conn, SQL_KEY_REVOKE, 1, &id, NULL);
		if (r && !strcmp(PQcmdTuples(r), "1")) {
			print_json(json_pack("{s:s, s:b}", "apiKeyId", id, "revoked", 1));
			rc = 0;
		} else {
			fprintf(stderr, "dialerctl: no active key %s\n", id);
		}
		PQclear(r);
		PQfinish(conn);
		return rc;
	}
	fprintf(stderr, "dialerctl: apikey create --org ORG | apikey revoke --id KEY_ID\n");
	return 2;
}

int ctl_flow(const struct dl_config *cfg, int argc, char **argv)
{
	const char *org = ctl_opt(argc, argv, "--org"), *name = ctl_opt(argc, argv, "--name");
	const char *url = ctl_opt(argc, argv, "--voice-url");
	char id[DL_ID_MAX];
	const char *params[4] = {id, org, name, url};
	PGconn *conn;
	PGresult *r;
	int rc = 1;

	if (argc < 2 || strcmp(argv[1], "create") || !org || !name || !*name || strlen(name) > 200 || !url ||
	    (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || strlen(url) > 2048) {
		fprintf(stderr, "dialerctl: flow create --org ORG --name N --voice-url http(s)://...\n");
		return 2;
	}
	if ((conn = ctl_connect(cfg)) == NULL)
		return 1;
	dl_id_new("flow", id);
	r = dl_db_exec(conn, SQL_FLOW_INSERT, 4, params, NULL);
	if (r) {
		print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "organizationId", org, "name", name,
				     "voiceUrl", url, "createdAt", PQgetvalue(r, 0, 0)));
		rc = 0;
	} else {
		fprintf(stderr, "dialerctl: could not create the flow (is %s an organization?)\n", org);
	}
	PQclear(r);
	PQfinish(conn);
	return rc;
}
