"""Helpers of the tests that open the rendered reports in a real browser: headless Chromium driven through the
DevTools protocol over a pipe (``--remote-debugging-pipe``: no Python browser package, no network port).

:class:`Browser` starts one Chromium; :meth:`Browser.open` lays a page out at a chosen viewport (a phone width
is emulated as a mobile device, which a ``--window-size`` cannot do: headless windows are at least 500 px
wide), :meth:`Browser.inspect` runs :data:`CHECK_SCRIPT` in it and :meth:`Browser.screenshot` saves a PNG.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import tempfile
from pathlib import Path

from carequal.batch.pdf import chromium_flags, find_chromium

CHECK_SCRIPT = r"""
(() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => {  // inside a box that scrolls sideways on its own (a wide table on a phone)
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const s = getComputedStyle(p);
      const r = p.getBoundingClientRect();
      if (["auto", "scroll"].includes(s.overflowX) && r.right <= width + 1) return true;
    }
    return false;
  };
  const overflow = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || getComputedStyle(el).visibility === "hidden") continue;
    if ((r.right > width + 1 || r.left < -1) && !scrolls(el)) {
      overflow.push(`${el.tagName.toLowerCase()}.${el.className} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
    }
  }
  const images = [...document.images].map((img) => ({
    loaded: img.complete && img.naturalWidth > 0, alt: img.getAttribute("alt"),
    right: Math.round(img.getBoundingClientRect().right)}));
  const ids = new Set([...document.querySelectorAll("[id]")].map((e) => e.id));
  const links = [...document.querySelectorAll('a[href^="#"]')].map((a) => decodeURIComponent(a.hash.slice(1)));
  const glance = document.querySelector("section.carequal-glance");
  return {width, scroll_width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
          overflow: overflow.slice(0, 20), images, broken_links: links.filter((h) => h && !ids.has(h)),
          glance: glance ? [...glance.querySelectorAll("li")].map((li) => li.textContent.trim()) : [],
          glance_top: glance ? glance.getBoundingClientRect().top : null};
})()
"""


def chromium() -> str | None:
    """The Chromium the tests use (:func:`carequal.batch.pdf.find_chromium`), or None."""
    return find_chromium()


class Browser:
    """One headless Chromium, spoken to over the DevTools pipe (fds 3 and 4 of the browser)."""

    def __init__(self, *, timeout: float = 60):
        self._profile = tempfile.TemporaryDirectory(prefix="carequal-test-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def pipes() -> None:  # in the child, before exec: the browser reads fd 3 and writes fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._proc = subprocess.Popen([chromium(), *chromium_flags(self._profile.name), "--remote-debugging-pipe",
                                       "about:blank"], pass_fds=(3, 4), preexec_fn=pipes,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self._events, self._session = b"", 0, [], None
        self.timeout = timeout

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._read], [], [], self.timeout)[0]:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        """Send a DevTools command (to the open page unless ``session`` is False) and return its result."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def _wait_for(self, event: str) -> None:
        for i, e in enumerate(self._events):
            if e.get("method") == event:
                del self._events[i]
                return
        while self._receive().get("method") != event:
            pass

    def open(self, page: Path, *, width: int, height: int, mobile: bool = False) -> Browser:
        """Open ``page`` in a new tab with a ``width`` × ``height`` viewport and wait for it to load."""
        if self._session:
            self.send("Target.closeTarget", {"targetId": self._target}, session=False)
        self._target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": self._target, "flatten": True},
                                  session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": mobile})
        self.send("Page.navigate", {"url": Path(page).resolve().as_uri()})
        self._wait_for("Page.loadEventFired")
        return self

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the open page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def inspect(self) -> dict:
        """What :data:`CHECK_SCRIPT` finds in the open page: the layout ``width`` and the document's
        ``scroll_width``, elements reaching past the right edge (outside a box that scrolls sideways), each
        image's ``loaded``/``alt``/``right`` edge, in-page links with no target, and the "At a glance" items with
        the block's distance from the top."""
        return self.evaluate(CHECK_SCRIPT)

    def screenshot(self, png: Path, *, width: int, height: int) -> Path:
        """A PNG of the top ``height`` CSS pixels of the open page (``width`` wide)."""
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                             "scale": 1}})
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(shot["data"]))
        return png

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()
