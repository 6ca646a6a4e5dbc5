"""Serving: how long `deepdive serve` takes to answer, and 20 streaming clients at once, on the tiny model.

The startup is timed from launching the command to its first answer (`/deepdive/info`): importing the stack,
loading the model, binding the port. Then `clients` clients stream a reply each at the same time through the
official `openai` client; every reply must come back whole (a finish reason, `max_tokens` tokens: an untrained
model never stops early), and the table gives the wall time and the tokens per second over all of them.
"""

import concurrent.futures
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import openai

from bench.common import print_table, write_result
from bench.tiny import untrained_chat_model_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir: str) -> tuple[subprocess.Popen, str, float]:
    """A `deepdive serve` process, its address, and the seconds it took to answer its first request."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "deepdive.cli", "serve", "--model", model_dir, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"deepdive serve exited: {process.stderr.read()}")
        try:
            urllib.request.urlopen(base + "/deepdive/info", timeout=1)
            return process, base, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)


def stream_reply(client: openai.OpenAI, index: int, max_tokens: int) -> tuple[int, str | None]:
    messages = [{"role": "user", "content": f"What is {index} + {index}?"}]
    chunks = client.chat.completions.create(
        model="deepdive", messages=messages, max_tokens=max_tokens, temperature=0, stream=True
    )
    pieces, finish = 0, None
    for chunk in chunks:
        if chunk.choices:
            pieces += bool(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
    return pieces, finish


def main(rounds: int = 3, clients: int = 20, max_tokens: int = 64) -> dict:
    model_dir = untrained_chat_model_dir()
    startups = []
    for _ in range(rounds):
        process, base, seconds = start_server(model_dir)
        startups.append(seconds)
        if len(startups) < rounds:
            process.terminate()
            process.wait()
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="not needed", max_retries=0)
        stream_reply(client, 0, 4)  # warm-up
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            replies = list(pool.map(lambda index: stream_reply(client, index, max_tokens), range(clients)))
        wall = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait()
    whole = sum(finish is not None for _, finish in replies)
    pieces = sum(count for count, _ in replies)
    record = {
        "startup_seconds": {"median": statistics.median(startups), "all": startups},
        "concurrent": {
            "clients": clients,
            "complete_replies": whole,
            "max_tokens": max_tokens,
            "streamed_pieces": pieces,
            "seconds": wall,
            "tokens_per_second": clients * max_tokens / wall,
        },
    }
    print_table(
        "Serving the tiny model (deepdive serve, untrained weights)",
        ["measure", "value"],
        [
            ["startup to first answer, s (median)", statistics.median(startups)],
            [f"{clients} streaming clients: complete replies", f"{whole} of {clients}"],
            [f"{clients} streaming clients: wall s", wall],
            ["tokens per second, all clients", clients * max_tokens / wall],
        ],
    )
    write_result("serving", record)
    return record


if __name__ == "__main__":
    main()
