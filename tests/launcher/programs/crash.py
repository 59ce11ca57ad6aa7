"""A program that crashes at once: the launcher's crash loop in tests."""

import sys

print("crashing at once", flush=True)
sys.exit(3)
