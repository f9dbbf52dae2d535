"""Where the time goes, from py-spy's raw (collapsed stacks) output.

    python -m tests.bench.profile_summary PROFILE.txt [--top 25] [--thread NAME]

Each line of the input is `frame;frame;...;frame COUNT`, outermost first, as written by
`py-spy record --format raw` (the benchmark's --profile option). Prints each function's
share of the samples: inclusive (the function or anything it calls) and self (the
function itself, at the top of the stack). Line numbers are dropped, so a function's
samples add up across its lines.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def summarise(path: str, thread: str | None = None) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    with open(path) as lines:
        for line in lines:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue  # py-spy cut a stack short (a thread that ended while sampled)
            count = int(count_text)
            frames = [_function(frame) for frame in stack.split(";")]
            if thread is not None and not any(thread in frame for frame in frames[:1]):
                continue
            total += count
            for function in set(frames):
                inclusive[function] += count
            own[frames[-1]] += count
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only stacks whose first frame (the thread, with --threads) contains this")
    args = parser.parse_args()
    total, inclusive, own = summarise(args.profile, args.thread)
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        for function, count in counter.most_common(args.top):
            print(f"{100 * count / total:6.1f}%  {function}")


if __name__ == "__main__":
    main()
