"""`make bench`: run the benchmarks, print their tables, write `bench/results/<name>.json`.

python -m bench.run                      # all of them (about 20 minutes on 2 CPU cores)
python -m bench.run trainer_overhead     # one or several by name
python -m bench.run --quick              # every benchmark for a step or two: checks they run
"""

import argparse
import importlib
import time


BENCHMARKS = ("trainer_overhead", "settings", "optimizer", "data_prep", "grpo_rollouts", "scaling", "serving")

# Smallest settings that still exercise every part of each benchmark (`--quick`, used by the test suite): a step
# or two, on small batches, without compiling; what they time means nothing, that they run and record is checked.
SMALL_PRETRAINING = ("--global_batch_size", "4", "--per_device_train_batch_size", "4", "--torch_compile", "false")
TWO_ATTENTIONS = {"default": [], "sdpa": ["--attn_implementation", "sdpa"]}
SMALL_GRPO = ("--global_batch_size", "16", "--per_device_train_batch_size", "16", "--max_completion_length", "32")
QUICK = {
    "trainer_overhead": {"rounds": 1, "steps": 2, "warmup": 1, "overrides": SMALL_PRETRAINING},
    "data_prep": {"rounds": 1},
    "grpo_rollouts": {"rounds": 1, "steps": 2, "variants": TWO_ATTENTIONS, "overrides": SMALL_GRPO},
    "scaling": {"rounds": 1, "steps": 1, "warmup": 1},
    "serving": {"rounds": 1, "clients": 3, "max_tokens": 4},
    "optimizer": {"rounds": 1, "steps": 1, "warmup": 1},
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="a step or two of each: checks, not figures")
    options = parser.parse_args(argv)
    unknown = sorted(set(options.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    results = {}
    for name in options.names or BENCHMARKS:
        started = time.time()
        module = importlib.import_module(f"bench.{name}")
        if options.quick and name == "settings":
            results[name] = module.main(quick=True)
        else:
            results[name] = module.main(**(QUICK.get(name, {}) if options.quick else {}))
        print(f"[{name}: {time.time() - started:.0f} s]")
    return results


if __name__ == "__main__":
    main()
