/* The OpenAPI document, linked into the binary from api/openapi.yaml so the
 * API serves the very document CI lints. */
#include <stddef.h>

__asm__(".section .rodata\n"
	".global api_openapi_yaml\n"
	"api_openapi_yaml:\n"
	".incbin \"api/openapi.yaml\"\n"
	".global api_openapi_yaml_end\n"
	"api_openapi_yaml_end:\n"
	".byte 0\n"
	".previous\n");
