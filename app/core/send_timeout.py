"""uvicorn's HTTP protocol with a send timeout: a client that stops reading is dropped.

uvicorn writes a response into the connection's buffer and, past 64 KiB unsent, makes the
app's next ``send`` wait until the client reads. A client that never reads would keep that
buffer (a 2 MB image, an export) and the waiting request for as long as it stays
connected, and uvicorn has no write timeout. Here, once writing is paused, the buffer is
checked every ``ANNOLOOP_SEND_TIMEOUT_S`` seconds: if it has not shrunk since the last
check the connection is reset (``abort``, not ``close``: a close would first wait for the
buffer to drain, which it never will). A slow client that reads a little in each period
keeps its connection. The in-flight bound (``app.core.inflight``) already gives up its slot
before the response is sent; this bounds the memory and the connection.

Chosen with ``uvicorn.run(http="app.core.send_timeout:HttpProtocol")`` (a string, so the
worker processes of ``--workers`` import it themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, Any

from app.core.config import get_settings

if TYPE_CHECKING:
    _Base = Any
else:
    try:  # what uvicorn's default ``http="auto"`` picks
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
    except ImportError:  # pragma: no cover  (httptools is a dependency; h11 is the fallback)
        from uvicorn.protocols.http.h11_impl import H11Protocol as _Base


class HttpProtocol(_Base):
    _stall_timer: asyncio.TimerHandle | None = None
    _stall_left: int = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        timeout = get_settings().send_timeout_s
        if timeout > 0 and self._stall_timer is None:
            self._watch(timeout)

    def resume_writing(self) -> None:
        self._unwatch()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def _watch(self, timeout: float) -> None:
        self._stall_left = self.transport.get_write_buffer_size()
        self._stall_timer = asyncio.get_running_loop().call_later(timeout, self._check, timeout)

    def _unwatch(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _check(self, timeout: float) -> None:
        self._stall_timer = None
        if not self.flow.write_paused:
            return
        if self.transport.get_write_buffer_size() < self._stall_left:
            self._watch(timeout)  # reading, if slowly
            return
        self.logger.info("dropped a client that read nothing for %g s", timeout)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a FIN: a FIN would queue behind the unsent bytes, which the kernel
            # would then keep (and retry) for minutes for a peer that reads nothing.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
