"""``gotstate-persist ui`` in a real browser: Debian's headless Chromium driven by Selenium.

The real server runs as a subprocess (``gotstate-persist ui URL --port 0``)
and its first stdout line is the URL to open. The browser clicks through
the pages as a person would, checks that the diagram marks the active
state, that no page shows a canary secret (with and without a keyring),
and that a browser without the token is refused. One test saves a
screenshot of a key's page: with ``UPDATE_SCREENSHOTS=1`` it replaces the
README's ``docs/images/inspector.png``.

Chromium and its driver come from apt (``chromium chromium-driver``;
``scripts/test-services.sh`` installs them). The driver path is passed
explicitly, so Selenium Manager never downloads anything. Outside CI a
machine without them skips these tests; in CI (``CI`` set) it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from _postgres import PostgresServer
from _ui_store import (
    BULK,
    BULK_KEYS,
    CONFIG_CANARY,
    HOSTILE_KEY,
    INVOICE_KEY,
    KEY,
    NAMESPACE,
    UiStore,
    populate,
)

from gotstate_persist.sealing import DEFAULT_ENV_VAR

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "inspector.png"
_MISSING = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]

if _MISSING and not os.environ.get("CI"):
    pytest.skip(
        f"{' and '.join(_MISSING)} missing: apt-get install chromium chromium-driver "
        "(scripts/test-services.sh does; in CI these tests fail instead)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 - only once the browser is known to exist
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    return populate(tmp_path_factory.mktemp("ui-browser"))


def _serve(stored: UiStore, *extra: str) -> Iterator[str]:
    """The URL the real server printed first; the server is stopped with Ctrl-C after."""
    command = [sys.executable, "-m", "gotstate_persist.cli", "ui", stored.url, "--port", "0"]
    here = Path(__file__).resolve().parent
    paths = [str(here), str(here.parent / "examples"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    env.pop(DEFAULT_ENV_VAR, None)  # the keyring is what the test passes, never the caller's
    server = subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), server.stderr.read() if server.stderr else url
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def decoded_url(stored: UiStore) -> Iterator[str]:
    yield from _serve(stored, "--keys", str(stored.keys), "--formats", "_ui_store:formats")


@pytest.fixture(scope="module")
def metadata_url(stored: UiStore) -> Iterator[str]:
    yield from _serve(stored)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if _MISSING:
        pytest.fail(f"CI is set but {' and '.join(_MISSING)} missing: the browser tests must run")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _no_canary(browser: webdriver.Chrome) -> None:
    source = browser.page_source
    assert CONFIG_CANARY not in source, browser.current_url
    assert "<b>bold</b>" not in source  # a key named like markup shows as text


def _click(browser: webdriver.Chrome, selector: str, text: str | None = None) -> None:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    chosen = [element for element in found if text is None or element.text == text]
    assert chosen, (selector, text, browser.current_url)
    _navigating(browser, chosen[0].click)


#: How long a page may take to load on a busy CI machine (a wait, never a time assertion).
_PAGE_LOAD_S = 60


def _navigating(browser: webdriver.Chrome, action: Callable[[], None]) -> None:
    """Run ``action`` (a click, a form submit) and wait until the next page has loaded.

    A click on a link returns before the new page is there: reading it at once
    would read the old page or an empty one on a loaded machine.
    """
    old = browser.find_element(By.TAG_NAME, "html")
    action()
    wait = WebDriverWait(browser, _PAGE_LOAD_S)
    wait.until(expected_conditions.staleness_of(old))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")
    _no_canary(browser)


def test_pages_render_and_links_navigate(browser: webdriver.Chrome, decoded_url: str) -> None:
    browser.get(decoded_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Namespaces"
    _no_canary(browser)
    _click(browser, "a.namespace-link", NAMESPACE)
    assert "Keys of" in browser.find_element(By.TAG_NAME, "h1").text
    keys = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "a.key-link")]
    assert keys == [HOSTILE_KEY, INVOICE_KEY, KEY]
    _click(browser, "a.key-link", KEY)
    active = browser.find_element(By.CSS_SELECTOR, ".diagram .state.active[data-state]")
    assert active.get_attribute("data-state") == "picking"
    on_path = browser.find_elements(By.CSS_SELECTOR, ".diagram .state.on-path[data-state]")
    assert [element.get_attribute("data-state") for element in on_path] == ["fulfilment"]
    events = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry")]
    assert len(events) == 3 and "payment → picking" in events[-1]
    _click(browser, "a.diff-link")
    assert "from v1 to v2" in browser.find_element(By.TAG_NAME, "h1").text
    assert "current_state" in browser.find_element(By.ID, "changes").text
    _navigating(browser, browser.back)
    _click(browser, "a.version-link", "snapshot v1")
    assert "Version 1" in browser.find_element(By.TAG_NAME, "h1").text
    cart = browser.find_element(By.CSS_SELECTOR, '.state-data[data-state="cart"]').text
    assert '"kind": "shop.coupon"' in cart and '"$decimal": "19.99"' in cart  # --formats
    _click(browser, "#nav-config")
    assert "**********" in browser.page_source  # the secret, redacted
    _click(browser, "#nav-extensions")
    _click(browser, "#nav-namespaces")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Namespaces"


def test_paging_and_search_by_clicking(browser: webdriver.Chrome, metadata_url: str) -> None:
    browser.get(metadata_url)
    _click(browser, "a.namespace-link", BULK)

    def shown() -> list[str]:
        return [element.text for element in browser.find_elements(By.CSS_SELECTOR, "a.key-link")]

    assert shown() == BULK_KEYS[:50]
    _click(browser, "a.next-page")
    assert shown() == BULK_KEYS[50:100]
    _click(browser, "a.next-page")
    assert shown() == BULK_KEYS[100:]
    assert not browser.find_elements(By.CSS_SELECTOR, "a.next-page")
    _click(browser, "a.prev-page")
    assert shown() == BULK_KEYS[50:100]
    search = browser.find_element(By.ID, "search")
    search.send_keys("-11")
    _navigating(browser, search.submit)
    assert shown() == BULK_KEYS[110:120]
    assert "10 keys matching" in browser.find_element(By.CSS_SELECTOR, ".count").text


def test_metadata_only_without_a_keyring(browser: webdriver.Chrome, metadata_url: str) -> None:
    browser.get(metadata_url)
    _click(browser, "a.namespace-link", NAMESPACE)
    _click(browser, "a.key-link", KEY)
    assert "metadata only" in browser.find_element(By.CSS_SELECTOR, ".note").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry")) == 3
    for nav in ("#nav-config", "#nav-extensions"):
        _click(browser, nav)
        assert "metadata only" in browser.find_element(By.CSS_SELECTOR, ".note").text


def test_without_the_token_everything_is_403(browser: webdriver.Chrome, decoded_url: str) -> None:
    base = decoded_url.split("/?", maxsplit=1)[0]
    browser.get(base + "/")
    assert "403" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(base + f"/keys?ns={NAMESPACE}&token=wrong")
    assert "403" in browser.find_element(By.TAG_NAME, "body").text
    for path in ("/", f"/keys?ns={NAMESPACE}", "/api/namespaces", "/static/inspector.css"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=30)
        assert refused.value.code == 403
    with urllib.request.urlopen(decoded_url, timeout=30) as admitted:
        assert admitted.status == 200


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, once its signature and header chunk's CRC check out."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header = data[16:29]
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(kind + header)
    width, height = struct.unpack(">II", header[:8])
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


def test_screenshot_of_a_key_page(
    browser: webdriver.Chrome, decoded_url: str, tmp_path: Path
) -> None:
    browser.get(decoded_url)
    browser.get(decoded_url.split("/?", maxsplit=1)[0] + f"/key?ns={NAMESPACE}&key={KEY}")
    active = browser.find_element(By.CSS_SELECTOR, ".diagram .state.active[data-state]")
    assert active.is_displayed()
    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "shot.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(target))
    width, height = _png_size(target.read_bytes())
    assert width >= 800 and height >= 600


def test_a_store_url_password_never_reaches_the_browser(
    browser: webdriver.Chrome, postgres_server: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """A real PostgreSQL store, opened by a URL with the test role's password in it."""
    stored = populate(tmp_path, url=pg_url)
    password = postgres_server.password
    assert password in stored.url
    for url in _serve(stored, "--keys", str(stored.keys)):
        browser.get(url)
        assert "***@" in browser.find_element(By.CSS_SELECTOR, ".store").text
        for step in ("a.namespace-link", "a.key-link", "a.version-link", "#nav-config"):
            _click(browser, step, None)
            assert password not in browser.page_source, browser.current_url
            assert quote(password, safe="") not in browser.page_source
