/* crypto.c: owns hashing for taskapi.core, through OpenSSL's libcrypto: SHA-256 of a string
 * and of a file (streamed in 64 KiB blocks, never read whole), HMAC-SHA256 (webhook
 * signatures), each as lowercase hex, and a constant-time string comparison. No provider
 * knowledge: the Lua layer (taskapi.webhook) decides what is signed and how. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crypto.h"
#include "errors.h"

#define TK_HASH_BLOCK (64u * 1024u)

static void push_hex(lua_State *L, const unsigned char *md, unsigned int len)
{
  static const char digits[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  unsigned int i;
  for (i = 0; i < len; i++) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 15];
  }
  lua_pushlstring(L, out, 2 * (size_t)len);
}

/* core.hmac_sha256(key, msg) -> hex */
static int l_hmac_sha256(lua_State *L)
{
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (klen > (size_t)0x7fffffff) return tk_fail(L, "invalid_argument", "HMAC key too long", -1, -1, 0);
  if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, md, &len))
    return tk_fail(L, "runtime", "HMAC-SHA256 failed (libcrypto)", -1, -1, 0);
  push_hex(L, md, len);
  return 1;
}

/* core.sha256(s) -> hex */
static int l_sha256(lua_State *L)
{
  size_t slen;
  const char *s = luaL_checklstring(L, 1, &slen);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(s, slen, md, &len, EVP_sha256(), NULL))
    return tk_fail(L, "runtime", "SHA-256 failed (libcrypto)", -1, -1, 0);
  push_hex(L, md, len);
  return 1;
}

/* core.sha256_file(path) -> hex | nil, err (kind "io", the path and errno's text) */
static int l_sha256_file(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  char msg[512];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  unsigned char *buf;
  EVP_MD_CTX *ctx;
  FILE *f;
  int failed = 0, err = 0;
  size_t n;

  f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, sizeof msg, "cannot open %.400s: %s", path, strerror(errno));
    return tk_fail(L, "io", msg, -1, -1, 0);
  }
  buf = malloc(TK_HASH_BLOCK);
  ctx = EVP_MD_CTX_new();
  if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
    failed = 1;
  } else {
    while ((n = fread(buf, 1, TK_HASH_BLOCK, f)) > 0) {
      if (!EVP_DigestUpdate(ctx, buf, n)) { failed = 1; break; }
    }
    if (!failed && ferror(f)) { err = errno ? errno : EIO; }
    else if (!failed && !EVP_DigestFinal_ex(ctx, md, &len)) failed = 1;
  }
  EVP_MD_CTX_free(ctx);
  free(buf);
  fclose(f);
  if (err) {
    snprintf(msg, sizeof msg, "cannot read %.400s: %s", path, strerror(err));
    return tk_fail(L, "io", msg, -1, -1, 0);
  }
  if (failed) return tk_fail(L, "runtime", "SHA-256 failed (out of memory or libcrypto)", -1, -1, 0);
  push_hex(L, md, len);
  return 1;
}

/* core.equal(a, b) -> boolean: the contents are compared in constant time (CRYPTO_memcmp);
 * only the lengths, which are not secret here (hex digests), can end it early. */
static int l_equal(lua_State *L)
{
  size_t alen, blen;
  const char *a = luaL_checklstring(L, 1, &alen);
  const char *b = luaL_checklstring(L, 2, &blen);
  lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
  return 1;
}

static const luaL_Reg crypto_funcs[] = {
  {"hmac_sha256", l_hmac_sha256},
  {"sha256", l_sha256},
  {"sha256_file", l_sha256_file},
  {"equal", l_equal},
  {NULL, NULL}};

void tk_crypto_open(lua_State *L)
{
  luaL_setfuncs(L, crypto_funcs, 0);
}
