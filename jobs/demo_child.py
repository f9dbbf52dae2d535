"""The child process of demo.command: a line a second on stdout, a few lines on stderr."""

import sys
import time


def main(seconds: int) -> None:
    print("child: starting", file=sys.stderr)
    for second in range(seconds):
        print(f"child: second {second + 1} of {seconds}")
        time.sleep(1)
    print("child: done", file=sys.stderr)


if __name__ == "__main__":
    main(int(sys.argv[1]))
