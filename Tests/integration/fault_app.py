"""A small, cheap HTTP/1.1 app for the process-fault tests (test_faults.py): a process of its own,
so that it can be SIGKILLed and started again on the same port under load.

Answers every request with `200 ok` (keep-alive; `x-app-pid` names the process), reads
Content-Length bodies and discards them. Prints "ready PORT" on stdout once it listens.

    python3 fault_app.py --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

PID = str(os.getpid()).encode()
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nx-app-pid: " + PID + b"\r\n\r\nok\n"


class App(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.body_left = 0

    def data_received(self, data):
        self.buf += data
        while True:
            if self.body_left:
                take = min(self.body_left, len(self.buf))
                self.buf = self.buf[take:]
                self.body_left -= take
                if self.body_left:
                    return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end].lower(), self.buf[end + 4:]
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                self.body_left = int(head[i + 17:].split(b"\r\n", 1)[0].strip())
            self.transport.write(ANSWER)


async def main(port: int):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(App, "127.0.0.1", port, reuse_address=True, backlog=1024)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    try:
        asyncio.run(main(ap.parse_args().port))
    except KeyboardInterrupt:
        sys.exit(0)
