"""The two small SMTP content filters of the lab's ``filters`` chain, run as threads.

- :class:`BeforeQueueProxy`: what mx1's ``smtpd_proxy_filter`` talks to. It takes a whole
  transaction, refuses a message whose Subject holds :data:`PROXY_REFUSE_WORD` with
  ``554 5.7.1`` at the end of DATA, and passes every other one to mx1's downstream smtpd,
  answering with that smtpd's own reply (``250 2.0.0 Ok: queued as ID``).
- :class:`AfterQueueFilter`: filter1's ``content_filter``. It accepts the message, re-injects
  it into filter1's second smtpd with ``XFORWARD NAME=... ADDR=...`` but without ``IDENT``
  (so that smtpd logs no ``orig_queue_id=``), and answers ``250 2.5.0 OK (<id>)``: its own
  ID, not Postfix's ``queued as``.

Both speak just enough SMTP for Postfix's smtpd proxy client and smtp(8); neither logs
anything (they are not what the lab records).
"""

from __future__ import annotations

import secrets
import smtplib
import socketserver
import threading
from collections.abc import Callable

PROXY_REFUSE_WORD = "SPAMMY"
PROXY_REPLY = "554 5.7.1 Rejected by lab proxy: message looks like spam"


class _Transaction:
    def __init__(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.xforward: dict[str, str] = {}


def _arg(line: str) -> str:
    """``MAIL FROM:<a@b> SIZE=1`` -> ``a@b``."""
    _, _, rest = line.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1 : rest.find(">")]
    return rest.split(" ")[0]


def _subject(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n"):
        if line.lower().startswith("subject:"):
            return line[8:].strip()
    return ""


class _Handler(socketserver.StreamRequestHandler):
    """One SMTP session; ``server.deliver(transaction, data)`` gives the DATA reply."""

    server: _Server

    def _send(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._send(f"220 {self.server.banner} ESMTP lab filter")
        tx = _Transaction()
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                caps = ["8BITMIME", "SMTPUTF8"]
                if self.server.xforward:
                    caps.append("XFORWARD NAME ADDR PROTO HELO IDENT SOURCE")
                lines = [self.server.banner, *caps]
                for cap in lines[:-1]:
                    self.wfile.write(f"250-{cap}\r\n".encode())
                self._send(f"250 {lines[-1]}")
            elif verb == "XFORWARD":
                for word in line.split(" ")[1:]:
                    key, _, value = word.partition("=")
                    tx.xforward[key.upper()] = value
                self._send("250 2.0.0 Ok")
            elif verb == "MAIL":
                tx.sender = _arg(line)
                tx.recipients = []
                self._send("250 2.1.0 Ok")
            elif verb == "RCPT":
                tx.recipients.append(_arg(line))
                self._send("250 2.1.5 Ok")
            elif verb == "DATA":
                self._send("354 End data with <CR><LF>.<CR><LF>")
                chunks: list[bytes] = []
                while True:
                    raw = self.rfile.readline()
                    if not raw or raw in (b".\r\n", b".\n"):
                        break
                    chunks.append(raw[1:] if raw.startswith(b"..") else raw)
                self._send(self.server.deliver(tx, b"".join(chunks)))
                tx = _Transaction()
            elif verb == "RSET":
                tx = _Transaction()
                self._send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._send("221 2.0.0 Bye")
                return
            else:
                self._send("502 5.5.2 Error: command not recognized")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, listen: tuple[str, int], banner: str, xforward: bool,
                 deliver: Callable[[_Transaction, bytes], str]) -> None:
        self.banner = banner
        self.xforward = xforward
        self.deliver = deliver
        super().__init__(listen, _Handler)


class _Running:
    def __init__(self, server: _Server) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _forward(tx: _Transaction, data: bytes, to: tuple[str, int], source: str,
             xforward: dict[str, str] | None) -> str:
    """Send one message on to a Postfix smtpd; its reply to DATA (or the refusal)."""
    with smtplib.SMTP(to[0], to[1], local_hostname="lab-filter", source_address=(source, 0),
                      timeout=30) as smtp:
        smtp.ehlo()
        if xforward:
            words = " ".join(f"{k}={v}" for k, v in xforward.items())
            code, msg = smtp.docmd("XFORWARD", words)
            if code != 250:
                return f"451 4.3.0 XFORWARD refused: {code} {msg.decode()}"
        code, msg = smtp.docmd("MAIL", f"FROM:<{tx.sender}>")
        if code != 250:
            return f"{code} {msg.decode()}"
        for r in tx.recipients:
            code, msg = smtp.docmd("RCPT", f"TO:<{r}>")
            if code not in (250, 251):
                return f"{code} {msg.decode()}"
        code, msg = smtp.data(data)
        return f"{code} {msg.decode()}"


def start_before_queue_proxy(listen: tuple[str, int], downstream: tuple[str, int],
                             banner: str) -> _Running:
    """mx1's ``smtpd_proxy_filter``: refuse :data:`PROXY_REFUSE_WORD`, pass the rest."""

    def deliver(tx: _Transaction, data: bytes) -> str:
        if PROXY_REFUSE_WORD in _subject(data):
            return PROXY_REPLY
        return _forward(tx, data, downstream, listen[0], None)

    return _Running(_Server(listen, banner, False, deliver))


def start_after_queue_filter(listen: tuple[str, int], reinject: tuple[str, int],
                             banner: str) -> _Running:
    """filter1's ``content_filter``: re-inject with XFORWARD NAME/ADDR only, answer
    ``250 2.5.0 OK (<own id>)``."""

    def deliver(tx: _Transaction, data: bytes) -> str:
        # NAME and ADDR only: no IDENT, so the re-injection logs no orig_queue_id=.
        xf = {k: v for k, v in tx.xforward.items() if k in ("NAME", "ADDR")}
        reply = _forward(tx, data, reinject, listen[0], xf)
        if not reply.startswith("250"):
            return reply
        return f"250 2.5.0 OK ({secrets.token_hex(9).upper()})"

    return _Running(_Server(listen, banner, True, deliver))
