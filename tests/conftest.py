"""Shared fixtures. Tests run on the CPU; sharding tests start their own subprocesses with 8 host devices."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
