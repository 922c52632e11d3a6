"""Chat rules on authenticated connections: sessions, membership, limits, liveness."""
