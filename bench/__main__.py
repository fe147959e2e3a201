"""``python -m bench [scenario ...]``: run benchmarks, print a table, write bench/results.json."""

import json
import sys
import tempfile
from pathlib import Path

from bench import assets
from bench import http_scenarios
from bench import scale
from bench import slow
from bench import stop
from bench import storm
from bench import sweep

SCENARIOS = {
    "http": http_scenarios.run,
    "storm": storm.run,
    "sweep": sweep.run,
    "scale": scale.run,
    "slow": slow.run,
    "stop": stop.run,
    "assets": assets.run,
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(names: list[str]) -> None:
    chosen = names or list(SCENARIOS)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
            print(f"== {name}", flush=True)
            figures = SCENARIOS[name](Path(workdir))
        results[name] = figures
        for key, value in figures.items():
            print(f"  {key:24} {value}")
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
