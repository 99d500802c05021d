"""Live migration (pre-copy, post-copy) and evacuation planning.

Not implemented in this version: scenarios cannot yet name migration events, and the config
loader rejects them as unknown event kinds.
"""
