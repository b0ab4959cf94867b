#ifndef OUTRIDER_COPENSSL_SHIM_H
#define OUTRIDER_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>

// Macros Swift cannot call, as functions.
static inline void coutrider_openssl_free(void *pointer) { OPENSSL_free(pointer); }
static inline long coutrider_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long coutrider_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline long coutrider_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }

// TLS (OutriderTLS). SSL_OP_* are built with the function-like SSL_OP_BIT macro.
static inline uint64_t coutrider_ssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t coutrider_ssl_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t coutrider_ssl_op_cipher_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
static inline long coutrider_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long coutrider_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline long coutrider_ssl_ctx_set_tlsext_servername_callback(SSL_CTX *ctx,
                                                                     int (*callback)(SSL *, int *, void *)) {
    return SSL_CTX_set_tlsext_servername_callback(ctx, callback);
}
static inline long coutrider_ssl_ctx_set_tlsext_servername_arg(SSL_CTX *ctx, void *arg) {
    return SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}
/// Bytes allocated behind a memory BIO (not the bytes pending in it): a BIO_s_mem buffer grows
/// to its peak and never shrinks, so this says when it is worth replacing an empty one.
static inline size_t coutrider_bio_mem_capacity(BIO *bio) {
    BUF_MEM *memory = NULL;
    BIO_get_mem_ptr(bio, &memory);
    return memory == NULL ? 0 : memory->max;
}

// AES-256-GCM (OIDC session cookies): the EVP_CIPHER_CTX_ctrl codes for the tag.
static inline int coutrider_evp_ctrl_gcm_get_tag(void) { return EVP_CTRL_GCM_GET_TAG; }
static inline int coutrider_evp_ctrl_gcm_set_tag(void) { return EVP_CTRL_GCM_SET_TAG; }

#endif
