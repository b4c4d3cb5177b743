"""Shared fixtures for the cross-implementation tests: the posnet binary and
a seeded random generator (the seed is printed so a failure can be replayed
with POSNET_TEST_SEED)."""

import json
import os
import random
import subprocess

import pytest


@pytest.fixture(scope="session")
def posnet_bin():
    path = os.environ.get("POSNET_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("POSNET_BIN must point at a built posnet binary (scripts/test sets it)")
    return path


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("POSNET_TEST_SEED", random.randrange(2**32)))
    print(f"{request.node.name}: POSNET_TEST_SEED={seed}")
    return random.Random(seed)


def run_lines(posnet_bin, args, lines):
    """Runs posnet with one input per line on stdin; returns its output lines."""
    proc = subprocess.run(
        [posnet_bin, *args],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout.splitlines()
    assert len(out) == len(lines), f"posnet {args}: {len(out)} outputs for {len(lines)} inputs; stderr: {proc.stderr}"
    return out, proc


def run_json(posnet_bin, args):
    proc = subprocess.run([posnet_bin, *args], capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]
