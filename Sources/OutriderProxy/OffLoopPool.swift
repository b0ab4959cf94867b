import Glibc
import OutriderFilters
import OutriderPosix

/// A few threads for work that must not run on an event loop (bcrypt). Jobs queue under a
/// mutex; results go back to the asking worker's loop through `EventLoop.post`.
final class OffLoopPool: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var ready = pthread_cond_t()
    private var jobs: [() -> Void] = []
    private var threads: [OSThread] = []
    private var stopping = false

    init(threadCount: Int) {
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&ready, nil)
        for index in 0..<threadCount {
            if let thread = try? OSThread.start(name: "outrider-pool\(index)", { [self] in work() }) {
                threads.append(thread)
            }
        }
    }

    func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(&lock)
        jobs.append(job)
        pthread_cond_signal(&ready)
        pthread_mutex_unlock(&lock)
    }

    private func work() {
        while true {
            pthread_mutex_lock(&lock)
            while jobs.isEmpty && !stopping { pthread_cond_wait(&ready, &lock) }
            if jobs.isEmpty { pthread_mutex_unlock(&lock); return }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(&lock)
            job()
        }
    }

    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_broadcast(&ready)
        pthread_mutex_unlock(&lock)
        for thread in threads { thread.join() }
    }
}

/// One worker's door to the pool: completions come back on that worker's loop.
final class WorkerOffLoopRunner: OffLoopRunner, @unchecked Sendable {
    let pool: OffLoopPool
    let loop: EventLoop

    init(pool: OffLoopPool, loop: EventLoop) {
        self.pool = pool
        self.loop = loop
    }

    func run(_ work: @escaping @Sendable () -> Bool, completion: @escaping @Sendable (Bool) -> Void) {
        let loop = self.loop
        pool.submit {
            let result = work()
            loop.post { completion(result) }
        }
    }
}
