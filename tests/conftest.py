"""Suite-wide settings: Hypothesis is reproducible under CI, exploratory on a laptop."""

from __future__ import annotations

import os

from hypothesis import settings

# In CI a property test must give the same verdict for the same commit: a landing is not
# decided by a lucky draw. Locally every run draws new examples and keeps failing ones.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

# taskboard writes its mail as .eml files when no provider is configured (var/mail by
# default); the suite's apps, and the processes its end-to-end tests start, write them
# to one temporary folder instead of the checkout.
if not os.environ.get("CORESTONE_EMAIL_FILE_DIR"):
    import tempfile

    os.environ["CORESTONE_EMAIL_FILE_DIR"] = tempfile.mkdtemp(prefix="taskboard-mail-")

# The CPU and event-loop checks judge the machine, and the suite shares a small one
# (several pytest workers, servers, databases): they would turn readiness to "warn" in
# tests about something else. Suite-wide readiness runs the memory, disk and descriptor
# checks; tests of the CPU and loop-lag checks name them (tests/unit/system).
os.environ.setdefault("CORESTONE_SYSTEM_CHECKS", "memory,disk,fds")
