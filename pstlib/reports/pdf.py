"""PDF by printing the report's HTML in headless Chromium, one browser for a whole run.

:class:`Browser` starts Debian's ``chromium`` once with ``--remote-debugging-pipe`` and speaks the
DevTools protocol over that pipe (NUL-separated JSON on file descriptors 3 and 4: no port, no
websocket library). Each page gets its own tab, so several threads print at once. The page size is
the report's ``@page`` CSS (A4). :meth:`Browser.load` also reports what a page did: console errors,
uncaught exceptions, dialogs (``alert``) and every network request, which the tests use to prove a
report runs nothing from mail and fetches nothing from the internet.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pstlib.reports.errors import ReportError

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
TIMEOUT_S = 60.0


def find_browser(executable: str | None = None) -> str:
    """The Chromium to use: ``executable``, else ``$PSTLIB_CHROMIUM``, else the first on PATH."""
    for candidate in (executable, os.environ.get("PSTLIB_CHROMIUM"), *BROWSERS):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise ReportError("no headless browser found for PDF output: apt-get install chromium "
                      "(or set PSTLIB_CHROMIUM)")


@dataclass
class PageLoad:
    """What a page did while loading: the evidence a report is inert and offline."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    result: Any = None  # the value of the expression evaluated after load, if any

    @property
    def external_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


class Browser:
    """One headless Chromium, driven over the DevTools pipe; use as a context manager."""

    def __init__(self, executable: str | None = None) -> None:
        self._profile = tempfile.mkdtemp(prefix="pstlib-chromium-")
        command_r, command_w = os.pipe()
        reply_r, reply_w = os.pipe()

        def remap() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (replies)
            a, b = os.dup(command_r), os.dup(reply_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [find_browser(executable), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
                "about:blank"]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(3, 4, command_r, reply_w),
            preexec_fn=remap,
        )
        os.close(command_r)
        os.close(reply_w)
        self._out = os.fdopen(command_w, "wb", buffering=0)
        self._in = os.fdopen(reply_r, "rb", buffering=0)
        self._lock = threading.Lock()
        self._next_id = 0
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Any]] = {}
        self._reader = threading.Thread(target=self._read, name="chromium-pipe", daemon=True)
        self._reader.start()

    # -------------------------------------------------------------------------------- protocol
    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None:
                        future.set_result(message)
                elif (session := message.get("sessionId")) in self._listeners:
                    for listener in list(self._listeners[session]):
                        listener(message)
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(ReportError("the browser closed its DevTools pipe"))

    def send(self, method: str, params: Mapping[str, Any] | None = None, *,
             session: str | None = None, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Send one DevTools command and wait for its result (ReportError on an error)."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._next_id += 1
            message: dict[str, Any] = {"id": self._next_id, "method": method,
                                       "params": dict(params or {})}
            if session is not None:
                message["sessionId"] = session
            self._pending[self._next_id] = future
            self._out.write(json.dumps(message).encode("utf-8") + b"\0")
        reply = future.result(timeout=timeout)
        if "error" in reply:
            raise ReportError(f"browser: {method} failed: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    # ----------------------------------------------------------------------------------- pages
    def load(self, url: str, *, expression: str | None = None,
             timeout: float = TIMEOUT_S, pdf: Path | None = None) -> PageLoad:
        """Open ``url`` in a new tab, wait for it to load, note what it did; optionally evaluate
        ``expression`` (its value in ``PageLoad.result``) and print the page to ``pdf``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        page = PageLoad(url)
        loaded = threading.Event()

        def listen(message: dict[str, Any]) -> None:
            method, params = message.get("method"), message.get("params", {})
            if method == "Page.loadEventFired":
                loaded.set()
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                page.exceptions.append(str(details.get("exception", {}).get("description")
                                           or details.get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                page.console_errors.append(" ".join(str(a.get("value", a.get("description")))
                                                    for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                page.console_errors.append(str(params["entry"].get("text")))
            elif method == "Network.requestWillBeSent":
                page.requests.append(str(params.get("request", {}).get("url"))[:200])
            elif method == "Page.javascriptDialogOpening":
                page.dialogs.append(str(params.get("message")))
                threading.Thread(target=self.send, args=("Page.handleJavaScriptDialog",
                                                         {"accept": True}),
                                 kwargs={"session": session}, daemon=True).start()

        self._listeners[session] = [listen]
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable", session=session)
            self.send("Page.navigate", {"url": url}, session=session)
            if not loaded.wait(timeout):
                raise ReportError(f"browser: {url} did not load in {timeout:.0f} s")
            if expression is not None:
                value = self.send("Runtime.evaluate", {"expression": expression,
                                                       "returnByValue": True}, session=session)
                page.result = value.get("result", {}).get("value")
            if pdf is not None:
                printed = self.send("Page.printToPDF", {"printBackground": True,
                                                        "preferCSSPageSize": True},
                                    session=session, timeout=timeout)
                pdf.write_bytes(base64.b64decode(printed["data"]))
        finally:
            self._listeners.pop(session, None)
            self.send("Target.closeTarget", {"targetId": target})
        return page

    def print_pdf(self, html_path: Path, pdf_path: Path) -> Path:
        """Print the HTML file to an A4 PDF (the page's ``@page`` size); return the PDF's path."""
        self.load(html_path.resolve().as_uri(), pdf=pdf_path)
        return pdf_path

    # ------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        try:
            if self._process.poll() is None:
                with contextlib.suppress(ReportError, TimeoutError, OSError):
                    self.send("Browser.close", timeout=5)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            self._out.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
