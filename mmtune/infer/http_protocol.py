"""uvicorn's HTTP/1.1 protocol with a deadline for the request headers.

uvicorn closes idle keep-alive connections but waits forever for a client that sends its request
line and headers a byte at a time (slow-loris), holding a connection each. Here every request must
have its headers complete within `header_timeout_s` of its first byte (or of the connection, or
of the previous response); otherwise the connection is closed. The body has its own deadline
(server.py `_read_json`).
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 30.0


def protocol_with_header_timeout(timeout_s: float = HEADER_TIMEOUT_S) -> type:
    """An H11Protocol class for `uvicorn.Config(http=...)` with the given header deadline."""

    class HeaderDeadlineH11Protocol(H11Protocol):
        header_timeout_s = timeout_s

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _disarm_header_deadline(self) -> None:
            handle = getattr(self, "_header_deadline", None)
            if handle is not None:
                handle.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineH11Protocol
