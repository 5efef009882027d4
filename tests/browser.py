"""Real-browser helpers: the example app served on 127.0.0.1, Debian's Chromium via Playwright,
the demo mailbox as the user's inbox, an authenticator, and per-page checks.

Chromium comes from the system (``/usr/bin/chromium``; ``.ci/run`` installs it); nothing here
downloads a browser. Without it the browser tests skip with the reason, except under CI,
where its absence fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
#: Debian's Chromium; other names only as a fallback for developers' machines.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LINK = re.compile(r"https?://[^\s<>\"']+")


def chromium_path() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = name if os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        reason = "Chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveApp:
    """The example app in its own process, with its own SQLite file, status file and key.

    Configured the way an operator would: ``EXAMPLE_*`` environment variables, read by the
    app's ``app.config.from_prefixed_env("EXAMPLE")``.
    """

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_file = workdir / "demo-status.json"
        self.log_file = workdir / "server.log"
        self.env = {
            **os.environ,
            "FLASK_APP": "example_app",
            "EXAMPLE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'example.sqlite'}",
            "EXAMPLE_DOMAINGUARD_STATIC_STATUS_FILE": str(self.status_file),
            "EXAMPLE_SECRET_KEY": os.urandom(16).hex(),
            # Mailed links point at the site's own address (and TRUSTED_HOSTS follows it).
            "EXAMPLE_DOMAINGUARD_EXTERNAL_URL": self.url,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def flask(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a ``flask`` command against the app's database, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "flask", *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        command = [sys.executable, "-m", "flask", "run", "--no-reload", "--no-debugger"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the example app did not start:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@contextmanager
def chromium(playwright: Any) -> Iterator[Any]:
    """Debian's Chromium, headless, closed afterwards."""
    browser = playwright.chromium.launch(
        executable_path=require_chromium(), args=CHROMIUM_ARGS, headless=True
    )
    try:
        yield browser
    finally:
        browser.close()


def new_page(browser: Any, *, timeout_ms: int = 15_000) -> Any:
    """A page in a fresh context (its own cookies: another person, or another device)."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    return page


class Authenticator:
    """The user's authenticator app: TOTP codes from the secret shown at enrolment.

    The server accepts one step either side of now and never the same step twice, so each
    code is for the step after the last one used: now, or the next step (accepted early),
    or, when both are used up, the next step once it is close enough to come.
    """

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = -1

    def code(self) -> str:
        step = max(int(time.time()) // 30, self.last_step + 1)
        while step > int(time.time()) // 30 + 1:
            time.sleep(0.5)
        self.last_step = step
        return str(self.totp.at(step * 30))

    def wrong_code(self) -> str:
        """A six-digit code that no step the server accepts right now would produce."""
        now = int(time.time()) // 30
        valid = {self.totp.at((now + d) * 30) for d in (-2, -1, 0, 1, 2)}
        return next(c for c in (f"{n:06d}" for n in range(1, 1000)) if c not in valid)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str

    @property
    def links(self) -> list[str]:
        return LINK.findall(self.body)


@dataclass
class Mailbox:
    """The demo mailbox page, read in its own browser page like a mail client."""

    page: Any
    url: str
    seen: list[Mail] = field(default_factory=list)

    def read(self) -> list[Mail]:
        self.page.goto(self.url + "/mailbox")
        mails = self.page.eval_on_selector_all(
            "article.mail",
            """els => els.map(e => ({to: e.dataset.to,
                subject: e.querySelector('h2').textContent.trim(),
                body: e.querySelector('pre').textContent}))""",
        )
        return [Mail(m["to"], m["subject"], m["body"]) for m in mails]

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.read() if address in [a.strip() for a in m.to.split(",")]]

    def wait_for(self, address: str, subject: str, *, timeout: float = 20.0) -> Mail:
        """The newest mail to ``address`` whose subject contains ``subject``, polled for."""
        deadline = time.monotonic() + timeout
        while True:
            for mail in self.to(address):
                if subject in mail.subject:
                    return mail
            if time.monotonic() > deadline:
                subjects = [(m.to, m.subject) for m in self.read()]
                raise AssertionError(f"no mail to {address} about {subject!r}; got {subjects}")
            time.sleep(0.25)


#: Accessibility smoke check and CSRF check of the page in the browser; returns problems.
_PAGE_CHECKS = r"""() => {
  const problems = [];
  if (!document.documentElement.getAttribute('lang')) problems.push('<html> has no lang');
  if (!document.title.trim()) problems.push('empty <title>');
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} <h1> elements, want exactly one`);
  for (const el of document.querySelectorAll('input, select, textarea')) {
    const type = (el.getAttribute('type') || 'text').toLowerCase();
    if (['hidden', 'submit', 'button', 'reset', 'image'].includes(type)) continue;
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    const named = byFor || el.closest('label') || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
  }
  for (const b of document.querySelectorAll('button')) {
    if (!b.textContent.trim() && !b.getAttribute('aria-label')) problems.push('nameless button');
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push(`img without alt: ${img.src}`);
  }
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  for (const id of new Set(ids.filter((id, i) => ids.indexOf(id) !== i))) {
    problems.push(`duplicate id ${id}`);
  }
  let forms = 0;
  for (const f of document.querySelectorAll('form')) {
    forms += 1;
    const token = f.querySelector('input[name="csrf_token"]');
    if (!token || !token.value) {
      problems.push(`form without csrf_token: ${f.getAttribute('action') || location.pathname}`);
    }
  }
  return {problems, forms};
}"""


@dataclass
class PageChecker:
    """Screenshots every page it is shown and checks it (accessibility smoke, CSRF)."""

    directory: Path
    pages: list[str] = field(default_factory=list)
    forms: int = 0

    def __call__(self, page: Any, name: str) -> None:
        page.wait_for_load_state("load")
        number = len(self.pages) + 1
        self.directory.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.directory / f"{number:02d}-{name}.png"), full_page=True)
        self.pages.append(name)
        result = page.evaluate(_PAGE_CHECKS)
        self.forms += result["forms"]
        assert result["problems"] == [], f"{name} ({page.url}): {result['problems']}"


def fresh_artifact_dir(name: str) -> Path:
    """``test-artifacts/screenshots/<name>``, emptied."""
    directory = ARTIFACTS / name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
