#ifndef OUTRIDER_CLINUX_H
#define OUTRIDER_CLINUX_H

// Linux declarations Glibc's Swift overlay leaves out (epoll, eventfd, signalfd, accept4, ...).
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

extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pipe2(int pipefd[2], int flags);

// GNU-only helpers, implemented in shim.c where _GNU_SOURCE is defined.
int clinux_cpu_count_allowed(void);
int clinux_block_signals(const int *signals, int count, sigset_t *out_set);
int clinux_set_thread_name(pthread_t thread, const char *name);

#endif
