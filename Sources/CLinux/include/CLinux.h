#ifndef OUTRIDER_CLINUX_H
#define OUTRIDER_CLINUX_H

// Linux declarations Glibc's Swift overlay leaves out (epoll, eventfd, signalfd, accept4, ...).
#include <malloc.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <pthread.h>
#include <sys/random.h>
#include <signal.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <string.h>
#include <linux/netfilter_ipv4.h>
#include <spawn.h>
#include <sys/wait.h>
#include <poll.h>

#include <sys/syscall.h>

// The data path's socket calls as bare system calls returning -errno. glibc's recv/send are
// cancellation points that switch the thread's cancel type around every call (Outrider never
// cancels threads), and read(2) on a socket takes the VFS path (fdget_pos, rw_verify_area,
// sock_read_iter) that recvfrom(2) skips: together about 3% of the proxy's CPU per
// keep-alive request.
#if defined(__x86_64__)
static inline long clinux_syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6) {
    long result;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}
#else
static inline long clinux_syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6) {
    long result = syscall(number, a1, a2, a3, a4, a5, a6);
    return result < 0 ? -(long)errno : result;
}
#endif

static inline long clinux_recv(int fd, void *buffer, size_t count) {
    return clinux_syscall6(SYS_recvfrom, fd, (long)buffer, (long)count, 0, 0, 0);
}

static inline long clinux_send(int fd, const void *buffer, size_t count, int flags) {
    return clinux_syscall6(SYS_sendto, fd, (long)buffer, (long)count, flags, 0, 0);
}

static inline long clinux_epoll_wait(int epoll, struct epoll_event *events, int max, int timeout) {
#if defined(SYS_epoll_wait)
    return clinux_syscall6(SYS_epoll_wait, epoll, (long)events, max, timeout, 0, 0);
#else
    return clinux_syscall6(SYS_epoll_pwait, epoll, (long)events, max, timeout, 0, 8);
#endif
}

extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pipe2(int pipefd[2], int flags);

// GNU-only helpers, implemented in shim.c where _GNU_SOURCE is defined.
int clinux_cpu_count_allowed(void);
int clinux_block_signals(const int *signals, int count, sigset_t *out_set);
int clinux_set_thread_name(pthread_t thread, const char *name);

/// malloc.h is not part of Glibc's Swift module.
static inline int clinux_malloc_trim(void) { return malloc_trim(0); }

#endif
