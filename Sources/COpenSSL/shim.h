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
#include <string.h>
#include <stdint.h>

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

// TLS 1.3 record layer hand-off (OutriderTLS.TLS13RecordLayer). After the handshake the
// connection's records are protected without OpenSSL's per-connection SSL object (7.6 KiB in
// OpenSSL 3.0), which needs what OpenSSL keeps to itself: the application traffic secrets
// (from the key log callback) and how many records each direction has protected with them
// (from the message callback: every record header after that direction's Finished).
typedef struct coutrider_tls13_tracker {
    uint64_t read_records;
    uint64_t write_records;
    uint8_t read_application;   // the peer's Finished was read: later records use its traffic keys
    uint8_t write_application;  // our Finished was written
    uint8_t key_updated;        // a KeyUpdate went either way: the secrets below are out of date
    uint8_t client_secret_length;
    uint8_t server_secret_length;
    uint8_t client_secret[64];
    uint8_t server_secret[64];
} coutrider_tls13_tracker;

static void coutrider_tls13_track_message(int write_p, int version, int content_type, const void *buf,
                                          size_t len, SSL *ssl, void *arg) {
    (void)version; (void)ssl;
    coutrider_tls13_tracker *tracker = (coutrider_tls13_tracker *)arg;
    if (tracker == NULL) return;
    if (content_type == SSL3_RT_HEADER) {
        // OpenSSL reports a record's header when it writes the record and when it has read
        // the header; a handshake message is reported after its record(s).
        if (write_p) {
            if (tracker->write_application) tracker->write_records++;
        } else if (tracker->read_application) {
            tracker->read_records++;
        }
    } else if (content_type == SSL3_RT_HANDSHAKE && len > 0) {
        unsigned char type = ((const unsigned char *)buf)[0];
        if (type == SSL3_MT_FINISHED) {
            if (write_p) tracker->write_application = 1; else tracker->read_application = 1;
        } else if (type == SSL3_MT_KEY_UPDATE) {
            tracker->key_updated = 1;
        }
    }
}

static int coutrider_hex_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Key log lines are "LABEL <client random, hex> <secret, hex>"; only the first application
/// traffic secrets are kept, in the tracker held in the SSL's ex_data slot 0.
static void coutrider_tls13_capture_secret(const SSL *ssl, const char *line) {
    coutrider_tls13_tracker *tracker = (coutrider_tls13_tracker *)SSL_get_ex_data(ssl, 0);
    if (tracker == NULL || line == NULL) return;
    static const char client_label[] = "CLIENT_TRAFFIC_SECRET_0 ";
    static const char server_label[] = "SERVER_TRAFFIC_SECRET_0 ";
    uint8_t *secret; uint8_t *length;
    if (strncmp(line, client_label, sizeof client_label - 1) == 0) {
        secret = tracker->client_secret; length = &tracker->client_secret_length;
    } else if (strncmp(line, server_label, sizeof server_label - 1) == 0) {
        secret = tracker->server_secret; length = &tracker->server_secret_length;
    } else {
        return;
    }
    const char *hex = strchr(line + sizeof client_label - 1, ' ');
    if (hex == NULL) return;
    hex++;
    size_t digits = strlen(hex);
    *length = 0;
    if (digits == 0 || digits % 2 != 0 || digits / 2 > 64) return;
    for (size_t i = 0; i < digits / 2; i++) {
        int high = coutrider_hex_nibble(hex[2 * i]), low = coutrider_hex_nibble(hex[2 * i + 1]);
        if (high < 0 || low < 0) { OPENSSL_cleanse(secret, 64); return; }
        secret[i] = (uint8_t)(high << 4 | low);
    }
    *length = (uint8_t)(digits / 2);
}

static inline void coutrider_ssl_ctx_capture_tls13_secrets(SSL_CTX *ctx) {
    SSL_CTX_set_keylog_callback(ctx, coutrider_tls13_capture_secret);
}
static inline void coutrider_ssl_track_tls13_records(SSL *ssl, coutrider_tls13_tracker *tracker) {
    SSL_set_ex_data(ssl, 0, tracker);
    SSL_set_msg_callback(ssl, coutrider_tls13_track_message);
    SSL_set_msg_callback_arg(ssl, tracker);
}
static inline int coutrider_bio_mem_data(BIO *bio, char **data) { return (int)BIO_get_mem_data(bio, data); }
static inline int coutrider_evp_ctrl_aead_set_tag(void) { return EVP_CTRL_AEAD_SET_TAG; }
static inline int coutrider_evp_ctrl_aead_get_tag(void) { return EVP_CTRL_AEAD_GET_TAG; }

#endif
