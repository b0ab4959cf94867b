#ifndef OUTRIDER_CNGHTTP2_SHIM_H
#define OUTRIDER_CNGHTTP2_SHIM_H

// nghttp2 1.52 as Debian ships it (1.52.0-1+deb12u*): the rapid-reset limit
// (nghttp2_option_set_stream_reset_rate_limit) and the CONTINUATION-flood limit
// (nghttp2_option_set_max_continuations) are back-ported and declared in this header.
#include <nghttp2/nghttp2.h>

#endif
