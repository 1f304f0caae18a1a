"""The local journal's cost: the same gateway code with the journal on and off, side by side.

    python bench/journal_bench.py [--rounds 6] [--duration 5]

Starts two gateways (bench/proxy_bench.py's stacks, telemetry on, one with
GATEWAY_JOURNAL_ENABLED=false), then runs wrk at concurrency 32 and 1 against each in
interleaved rounds, alternating which goes first, and prints throughput, the gateway's CPU per
request (all its threads, the hand-off's included) and p50 at concurrency 1.
"""

from __future__ import annotations

import argparse
import statistics

from proxy_bench import Stack, paired_changes, paired_line, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run at concurrency 32")
    options = parser.parse_args()

    stacks = {
        "journal on": Stack(telemetry=True).start(),
        "journal off": Stack(telemetry=True, extra_env={"GATEWAY_JOURNAL_ENABLED": "false"}).start(),
    }
    figures = {name: {"rps": [], "cpu": [], "p50": []} for name in stacks}
    try:
        for stack in stacks.values():
            wrk(stack.gateway_url, stack.key, connections=8, duration=2)  # warm-up
        for round_number in range(options.rounds):
            order = list(stacks.items())
            if round_number % 2:
                order.reverse()
            for name, stack in order:
                before = stack.cpu_seconds()
                c32 = wrk(stack.gateway_url, stack.key, connections=32, duration=options.duration)
                if c32["NON2XX"] or c32["SOCKET_ERRORS"]:
                    raise SystemExit(f"{name}: {c32['NON2XX']:.0f} non-2xx, {c32['SOCKET_ERRORS']:.0f} socket errors")
                figures[name]["rps"].append(c32["RPS"])
                figures[name]["cpu"].append((stack.cpu_seconds() - before) / c32["REQUESTS"] * 1e6)
                c1 = wrk(stack.gateway_url, stack.key, connections=1, duration=max(options.duration // 2, 2))
                figures[name]["p50"].append(c1["P50_US"] / 1000)
    finally:
        for stack in stacks.values():
            stack.stop()

    print(f"\n{options.rounds} interleaved rounds; median, then every round")
    for name, values in figures.items():
        rounds = " ".join(f"{value:.0f}" for value in values["rps"])
        cpu = " ".join(f"{value:.0f}" for value in values["cpu"])
        print(
            f"{name:12} c32 {statistics.median(values['rps']):8.1f} req/s [{rounds}]"
            f"  CPU {statistics.median(values['cpu']):5.0f} us/req [{cpu}]"
            f"  c1 p50 {statistics.median(values['p50']):.3f} ms"
        )
    on, off = figures["journal on"], figures["journal off"]
    throughput = statistics.median(on["rps"]) / statistics.median(off["rps"]) - 1
    cpu = statistics.median(on["cpu"]) / statistics.median(off["cpu"]) - 1
    print(f"journal on vs off: throughput {throughput * 100:+.1f}%, CPU per request {cpu * 100:+.1f}%")
    print(paired_line("journal on vs off, paired by round: throughput", paired_changes(off["rps"], on["rps"])))


if __name__ == "__main__":
    main()
