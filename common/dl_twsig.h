/* dl_twsig: the carrier's request signature (X-Twilio-Signature):
 * base64(HMAC-SHA1(auth_token, URL + key1 + value1 + key2 + value2 ...)) with
 * the POST parameters sorted by key (then value, for repeated keys), URL being
 * the exact URL requested, query included. No logging. */
#ifndef DL_TWSIG_H
#define DL_TWSIG_H

#include <stdbool.h>

#include "dl_form.h"
#include "dl_util.h"

/* base64 of a 20-byte digest: 28 chars + NUL. */
#define DL_TWSIG_LEN 29

/* Signs url and params with auth_token into out. Returns 0, or -ENOMEM. */
int dl_twsig_compute(const char *auth_token, const char *url, const struct dl_form *params,
		     char out[DL_TWSIG_LEN]) DL_WUR;
/* True when signature (may be NULL) is the signature of url and params;
 * compares in constant time. */
bool dl_twsig_valid(const char *auth_token, const char *url, const struct dl_form *params,
		    const char *signature);

#endif
