"""The result row (long format: one figure per row), versioned.

A row describes itself: what was measured (metric, unit, formula id, value, statistics, raw samples), under which
conditions (params), on what (model and its weights hash, backend and version, device, dtype, task and version),
on which machine (the environment fingerprint, named by its id), and the comparability key that says which rows may
be compared. On disk (harness.results.store) a file holds each fingerprint once, as an environment record, and each
row its `fingerprint_id` and `key_id` (not the key, which is made of the row's fields); in memory every row has its
`fingerprint` and `key` again.
"""

import datetime
import hashlib
import json

from harness.errors import ConfigError

# Bump when the row layout changes, and teach upgrade() to turn rows of the older version into the new layout
# (tests/fixtures/rows_v*.jsonl keep a real sample of every version, and the tests read each).
SCHEMA_VERSION = 3

# The context fields that decide whether two figures are comparable: the workload (docs/METRICS.md). The
# environment (backend version, driver, torch, bench's revision: ENVIRONMENT_FIELDS) is recorded with every row but
# is not part of the key, so two nights pair across an upgrade and compare reports what changed.
KEY_FIELDS = (
    "profile", "device_name", "backend", "dtype", "model", "model_revision", "task", "task_version", "scenario",
)
# Where each environment field lives: the row itself or its fingerprint.
ENVIRONMENT_FIELDS = {"backend_version": "row", "bench": "fingerprint", "git_revision": "fingerprint",
                      "python": "fingerprint", "torch": "fingerprint", "transformers": "fingerprint",
                      "accelerate": "fingerprint", "driver": "fingerprint", "platform": "fingerprint"}


def comparability_key(context: dict, params: dict) -> dict:
    key = {field: context.get(field) for field in KEY_FIELDS}
    key["params"] = params
    return key


def environment(row: dict) -> dict:
    """The row's environment: the versions and revision it was measured under (not part of its key)."""
    return {name: (row if where == "row" else row.get("fingerprint") or {}).get(name)
            for name, where in ENVIRONMENT_FIELDS.items()}


def key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_id(fingerprint: dict) -> str:
    """The id of an environment fingerprint: equal fingerprints have equal ids, across runs and machines."""
    return key_id(fingerprint)


def make_row(context: dict, *, metric: str | None, unit: str | None, formula: str | None, value, params: dict,
             stats: dict | None = None, samples: list | None = None, status: str = "ok",
             error: str | None = None) -> dict:
    key = comparability_key(context, params)
    return {
        "schema_version": SCHEMA_VERSION,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in context.items() if k != "fingerprint"},
        "params": params,
        "metric": metric,
        "unit": unit,
        "formula": formula,
        "value": value,
        "stats": stats or {},
        "samples": samples or [],
        "status": status,
        "error": error,
        "key": key,
        "key_id": key_id(key),
        "fingerprint_id": fingerprint_id(context.get("fingerprint", {})),
        "fingerprint": context.get("fingerprint", {}),
    }


def failed_row(context: dict, error: str) -> dict:
    """The row a cell leaves when it could not finish: no figure, the reason in `error`."""
    return make_row(context, metric=None, unit=None, formula=None, value=None, params={}, status="failed",
                    error=error)


def upgrade(row: dict, where: str) -> dict:
    """`row` in the current layout, whatever earlier version wrote it; a row of a version this bench does not know
    (a newer bench's) is refused rather than misread.
    Version 2 added `profile_specs` (the profile's price per hour and interconnect, which verdicts read); a version 1
    row gets None for each: unknown, never looked up in today's profile files. Version 2's key is the workload only:
    a version 1 row's key (which held backend_version and the driver) is made anew from its fields. Version 3 stores
    the fingerprint once per file (rows name it by `fingerprint_id`); an older row, which holds its own, gets the id
    of it."""
    version = row.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ConfigError(f"{where}: row schema version {version!r} is not one this bench reads (1 to "
                          f"{SCHEMA_VERSION})", hint="a newer bench wrote it: upgrade bench to read it")
    if version == 1:
        key = comparability_key(row, row.get("params") or {})
        row = {**row, "schema_version": 2, "profile_specs": {"price_usd_per_hour": None, "interconnect": None},
               "key": key, "key_id": key_id(key)}
    if version <= 2:
        row = {**row, "schema_version": 3, "fingerprint_id": fingerprint_id(row.get("fingerprint") or {})}
    return row
