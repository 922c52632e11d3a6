"""The WebSocket transport: accept, handshake, frames, outbound bytes, the flusher."""
