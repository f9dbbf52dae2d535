"""What a page's long tasks were made of, from a Chromium trace (the page benchmark's --trace).

    python -m tests.bench.trace_summary TRACE.json [--over 50] [--top 12]

Takes the tasks of the renderer's main thread longer than --over ms and splits each into the
trace events it ran, by their own time (an event's duration less that of the events inside
it): script, JSON parsing, style, layout, paint, garbage collection, the stream's parsing.
Prints each long task, then the events' own time summed over all of them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TASK = "RunTask"
MAIN_THREAD = "CrRendererMain"


@dataclass
class LongTask:
    start_us: float
    duration_us: float
    own: Counter[str] = field(default_factory=Counter)


def event_name(event: dict[str, Any]) -> str:
    """The event's name, with the DOM event's type or the called function's name when known."""
    name: str = event["name"]
    data = event.get("args", {}).get("data", {})
    if name == "EventDispatch" and "type" in data:
        return f"EventDispatch {data['type']}"
    if name == "FunctionCall" and data.get("functionName"):
        return f"FunctionCall {data['functionName']}"
    return name


def long_tasks(trace: dict[str, Any] | list[dict[str, Any]], over_ms: float) -> list[LongTask]:
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {
        (event["pid"], event["tid"])
        for event in events
        if event.get("ph") == "M" and event["name"] == "thread_name" and event["args"].get("name") == MAIN_THREAD
    }
    # Complete events only ("X"): what Chromium's timeline categories record.
    spans = sorted(
        (event for event in events if event.get("ph") == "X" and (event["pid"], event["tid"]) in main),
        key=lambda event: (event["pid"], event["tid"], event["ts"], -event.get("dur", 0)),
    )
    tasks: list[LongTask] = []
    current: LongTask | None = None
    # (end, name, time inside it taken by the events it contains) of the events open now
    stack: list[list[Any]] = []

    def close_until(ts: float) -> None:
        while stack and stack[-1][0] <= ts:
            end, name, inner, start = stack.pop()
            if current is not None:
                current.own[name] += (end - start) - inner

    thread = None
    for event in spans:
        if (event["pid"], event["tid"]) != thread:
            close_until(float("inf"))
            thread, current = (event["pid"], event["tid"]), None
        start, duration = event["ts"], event.get("dur", 0)
        close_until(start)
        if not stack:
            current = None
            if event["name"] == TASK and duration >= over_ms * 1000:
                current = LongTask(start, duration)
                tasks.append(current)
        if stack:
            stack[-1][2] += duration
        stack.append([start + duration, event_name(event), 0.0, start])
    close_until(float("inf"))
    return sorted(tasks, key=lambda task: task.start_us)


def summarise(path: str, over_ms: float = 50, top: int = 12) -> str:
    with open(path) as source:
        tasks = long_tasks(json.load(source), over_ms)
    out = [f"{path}: {len(tasks)} tasks over {over_ms:g} ms on the main thread"]
    total: Counter[str] = Counter()
    for task in tasks:
        parts = ", ".join(f"{name} {us / 1000:.0f}" for name, us in task.own.most_common(5) if us >= 1000)
        out.append(f"  {task.duration_us / 1000:6.0f} ms: {parts}")
        total.update(task.own)
    if tasks:
        out.append("  their time, summed (ms):")
        out += [f"    {us / 1000:8.1f}  {name}" for name, us in total.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", nargs="+")
    parser.add_argument("--over", type=float, default=50, help="ms: the tasks longer than this")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for path in args.trace:
        print(summarise(path, args.over, args.top))


if __name__ == "__main__":
    main()
