#!/usr/bin/env python3
"""A TCP relay that adds latency, for kernels without netem.

    delayproxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT and relays every connection to
127.0.0.1:TARGET_PORT.  Every chunk is delivered DELAY_MS after it was read,
in each direction (a one-way delay; a request/answer costs 2 x DELAY_MS on a
kept-alive connection), and the first bytes of a new connection wait one
extra round trip (the TCP handshake), so a request on a fresh connection
costs about 4 x DELAY_MS, as with netem.  Chunks are pipelined, not
serialised: the delay does not cap throughput below WINDOW bytes per
round trip.

Memory bound: at most WINDOW (8 MiB) of data in flight per connection and
direction (QUEUE_CHUNKS chunks of at most CHUNK bytes).
"""

import asyncio
import sys
import time

CHUNK = 256 * 1024
QUEUE_CHUNKS = 32  # WINDOW = CHUNK * QUEUE_CHUNKS = 8 MiB


async def pump(reader, writer, delay, first_extra):
    queue = asyncio.Queue(QUEUE_CHUNKS)

    async def read_side():
        extra = first_extra
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay + extra, data))
            extra = 0
            if not data:
                return

    async def write_side():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read_side(), write_side())
    except (ConnectionError, OSError):
        pass


async def handle(creader, cwriter, target, delay):
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(
        pump(creader, swriter, delay, 2 * delay),
        pump(sreader, cwriter, delay, 0),
        return_exceptions=True)
    for w in (cwriter, swriter):
        w.close()


async def main():
    listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, target, delay), "127.0.0.1", listen, backlog=256)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
