/* Placeholders answering 501 for handlers not written yet. Each resource
 * module deletes its entries from here as it lands. */
#include "api.h"

#define STUB(fn)                                                             \
	void fn(struct api_call *c)                                          \
	{                                                                    \
		dl_http_error(c->resp, 501, "%s is not implemented yet", #fn); \
	}

