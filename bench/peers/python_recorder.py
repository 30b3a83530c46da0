"""A peer the collector is measured against: a recorder as one would write it
in Python with asyncio and `websockets` (Debian's python3-websockets).

Each message is parsed and dumped again with its receive time, kept in a
per-stream batch; every BATCH seconds each batch is gzipped (level 5) and
written (write, fsync, rename) in the default thread-pool executor.

    python3 python_recorder.py <out dir> <batch seconds> <ws url> [<ws url> ...]

Speaks the bench's child protocol (bench/child.ts): prints {"open": n} once
every socket is open, then answers stdin lines: `stats` with
{"frames","bytes","open"}, `close` by storing what is open, answering, exiting.
"""

import asyncio
import gzip
import json
import os
import sys
import time

import websockets

OUT, BATCH_SECONDS, URLS = sys.argv[1], float(sys.argv[2]), sys.argv[3:]

frames = 0
received_bytes = 0
open_sockets = 0
batches = {}
sequence = 0


def store(stream, lines, n):
    body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=5)
    folder = os.path.join(OUT, stream)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f"{n:08d}.ndjson.gz")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, final)


async def seal_all(loop):
    global batches, sequence
    sealed, batches = batches, {}
    jobs = []
    for stream, lines in sealed.items():
        sequence += 1
        jobs.append(loop.run_in_executor(None, store, stream, lines, sequence))
    await asyncio.gather(*jobs)


async def sealer(loop):
    while True:
        await asyncio.sleep(BATCH_SECONDS)
        await seal_all(loop)


async def receive(url, ready):
    global frames, received_bytes, open_sockets
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        open_sockets += 1
        ready.set_result(None)
        async for message in ws:
            recv_ts = time.time_ns() // 1000
            frames += 1
            received_bytes += len(message)
            frame = json.loads(message)
            stream = frame["stream"]
            line = json.dumps(
                {"recv_ts": recv_ts, "stream": stream, "data": frame["data"]},
                separators=(",", ":"),
            )
            batches.setdefault(stream, []).append(line)
    open_sockets -= 1


def reply(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def main():
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in URLS]
    tasks = [asyncio.create_task(receive(url, ready)) for url, ready in zip(URLS, readies)]
    await asyncio.gather(*readies)
    reply({"open": open_sockets})
    asyncio.create_task(sealer(loop))
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command == "stats":
            reply({"frames": frames, "bytes": received_bytes, "open": open_sockets})
        elif command == "close":
            for task in tasks:
                task.cancel()
            await seal_all(loop)
            reply({"frames": frames, "bytes": received_bytes, "open": 0})
            os._exit(0)
        elif command == "":
            os._exit(0)
        else:
            reply({"error": f"unknown command: {command}"})


asyncio.run(main())
