#ifndef OUTRIDER_CCRYPT_SHIM_H
#define OUTRIDER_CCRYPT_SHIM_H
// libxcrypt: crypt_r with bcrypt ($2b$, $2y$) support, for htpasswd verification.
#include <crypt.h>
#endif
