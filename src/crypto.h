/* crypto.h: SHA-256 and HMAC-SHA256 (OpenSSL's libcrypto) for taskapi.core. */
#ifndef TK_CRYPTO_H
#define TK_CRYPTO_H

#include "compat.h"

/* Adds hmac_sha256, sha256, sha256_file and equal to the module table on top of the stack. */
void tk_crypto_open(lua_State *L);

#endif
