"""overcommit: a multi-host cluster emulator for memory-overcommit mechanisms.

Hosts and guests are plain Python + numpy models; Redis holds tmem pools and swap stores;
the `inline` runtime drives everything in one process. See README.md and docs/.
"""

__version__ = "0.1.0"
