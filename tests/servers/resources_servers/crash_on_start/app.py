"""Test server that fails during startup, to check that the launcher reports its last log lines."""

import sys

sys.stderr.write("crash_on_start: loading the environment failed: missing file data/answers.jsonl\n")
sys.exit(3)
