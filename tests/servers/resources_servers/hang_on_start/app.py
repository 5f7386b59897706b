"""Test server that never finishes starting (a stuck model download, say): the launcher must time out, not hang."""

import sys
import time

sys.stderr.write("hang_on_start: waiting for a resource that never arrives\n")
sys.stderr.flush()
time.sleep(3600)
