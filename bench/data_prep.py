"""Data preparation: corpus -> tokenized, packed blocks, in MB of text per second.

One process against `datasets.map(batched, num_proc=N)`, each on a cold cache (a fresh cache folder, so
nothing is reused), alternating; then the cached rebuild: the same build again, which `datasets` answers from
its cache by fingerprint.
"""

import os
import statistics
import tempfile
import time

from bench.common import print_table, write_result
from bench.tiny import parse_tiny, tokenizer_and_corpus
from deepdive.data import build_shakespeare, packed_dataset, tokenize_documents


def prepare(tokenizer, seq_len: int, num_proc: int | None, cache_dir: str) -> tuple[float, int]:
    """Seconds to build, tokenize and pack the Shakespeare train split into `cache_dir`; the blocks made."""
    started = time.perf_counter()
    corpus = build_shakespeare(cache_dir=cache_dir)
    blocks = packed_dataset(tokenize_documents(corpus["train"], tokenizer, num_proc=num_proc), seq_len)
    return time.perf_counter() - started, len(blocks)


def main(rounds: int = 3) -> dict:
    args, _ = parse_tiny()
    tokenizer, corpus = tokenizer_and_corpus(args.vocab_size)
    megabytes = sum(len(text.encode("utf-8")) for text in corpus["train"]["text"]) / 1e6
    processes = os.cpu_count() or 1
    variants = {"1 process": None, f"datasets.map num_proc={processes}": processes}
    times = {name: [] for name in variants}
    cached = []
    prepare(tokenizer, args.seq_len, None, tempfile.mkdtemp())  # warm-up: imports, tokenizer threads
    for _ in range(rounds):
        for name, num_proc in variants.items():
            cache_dir = tempfile.mkdtemp(prefix="deepdive-bench-cache-")
            seconds, n_blocks = prepare(tokenizer, args.seq_len, num_proc, cache_dir)
            times[name].append(seconds)
            if num_proc is None:
                cached.append(prepare(tokenizer, args.seq_len, None, cache_dir)[0])
    rows, record = [], {"megabytes": megabytes, "blocks": n_blocks}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows.append([name, median, megabytes / median])
        record[name] = {"seconds": median, "megabytes_per_second": megabytes / median}
    record["cached rebuild"] = {"seconds": statistics.median(cached)}
    rows.append(["cached rebuild (1 process)", statistics.median(cached), megabytes / statistics.median(cached)])
    print_table(
        f"Data preparation (Shakespeare train split, {megabytes:.1f} MB -> {n_blocks} blocks of {args.seq_len})",
        ["how", "seconds", "MB/s"],
        rows,
    )
    write_result("data_prep", record)
    return record


if __name__ == "__main__":
    main()
