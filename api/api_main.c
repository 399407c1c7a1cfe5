/* dialer-api: the REST API and the carrier's status callbacks. */
#include "dl_service.h"

extern const struct dl_service api_service;

int main(int argc, char **argv)
{
	return dl_service_main(&api_service, argc, argv);
}
