#include "dl_twsig.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pair_cmp(const void *a, const void *b)
{
	const struct dl_form_pair *x = *(const struct dl_form_pair *const *)a;
	const struct dl_form_pair *y = *(const struct dl_form_pair *const *)b;
	int c = strcmp(x->key, y->key);

	return c != 0 ? c : strcmp(x->value, y->value);
}

int dl_twsig_compute(const char *auth_token, const char *url, const struct dl_form *params,
		     char out[DL_TWSIG_LEN])
{
	const struct dl_form_pair *sorted[DL_FORM_MAX_PAIRS];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char *text = NULL;
	size_t len = 0;
	FILE *m;
	int rc = -ENOMEM;

	for (int i = 0; i < params->n; i++)
		sorted[i] = &params->pairs[i];
	qsort(sorted, (size_t)params->n, sizeof(sorted[0]), pair_cmp);
	m = open_memstream(&text, &len);
	if (m == NULL)
		return -ENOMEM;
	fputs(url, m);
	for (int i = 0; i < params->n; i++) {
		fputs(sorted[i]->key, m);
		fputs(sorted[i]->value, m);
	}
	if (fclose(m) != 0 || text == NULL)
		goto out;
	if (HMAC(EVP_sha1(), auth_token, (int)strlen(auth_token), (const unsigned char *)text, len, mac,
		 &maclen) == NULL || maclen != 20)
		goto out;
	/* 20 bytes encode to exactly 28 base64 chars plus the NUL. */
	EVP_EncodeBlock((unsigned char *)out, mac, 20);
	rc = 0;
out:
	free(text);
	return rc;
}

bool dl_twsig_valid(const char *auth_token, const char *url, const struct dl_form *params,
		    const char *signature)
{
	char want[DL_TWSIG_LEN];

	if (signature == NULL || strlen(signature) != DL_TWSIG_LEN - 1)
		return false;
	if (dl_twsig_compute(auth_token, url, params, want) < 0)
		return false;
	return CRYPTO_memcmp(want, signature, DL_TWSIG_LEN - 1) == 0;
}
