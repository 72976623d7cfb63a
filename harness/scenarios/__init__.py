"""Workloads. A scenario is a function run(backend, params, recorder) that records figures as rows."""

from harness.registry import Registry

SCENARIOS = Registry(
    "scenario",
    {
        "latency": "harness.scenarios.speed:run_latency",
        "throughput": "harness.scenarios.speed:run_throughput",
        "quality": "harness.scenarios.quality:run_quality",
        "served": "harness.scenarios.served:run_served",
        "find_max": "harness.scenarios.capacity:run_find_max",
    },
)
