"""
The webmail in a real headless browser (Debian's chromium driven by
Selenium through chromedriver) against the real ``twistd pymail`` process:
sign in, read a message delivered over SMTP, reply to another local
account, see new mail appear live, and screenshots of the main pages.

Screenshots go to a temporary directory; with ``PYMAIL_SCREENSHOTS=DIR``
they are kept there (``PYMAIL_SCREENSHOTS=docs/images`` refreshes the
pictures in docs/webmail.md).
"""

from __future__ import annotations

import imaplib
import os
import re
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from harness import PymailProcess, free_port, tool

selenium = pytest.importorskip("selenium") if not os.environ.get("CI") else __import__("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

USERS = {"alice@example.org": "alice-web-pw1", "bob@example.org": "bob-web-pw22"}

REPO = Path(__file__).resolve().parents[2]

#: Seconds to wait for anything in the browser.
WAIT = 15

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1280,860")

HTML_MAIL = (
    "From: Newsletter <news@example.net>\r\nTo: alice@example.org\r\n"
    "Subject: November newsletter\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOur news, in plain text.\r\n"
    "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<h2 style=\"color:#2f5bea\">November news</h2><p>Hello Alice,</p>"
    "<p>Here is what happened this month. <b>Bold</b> claims, <i>italic</i> doubts.</p>"
    "<img src=\"https://tracker.example/open.gif?id=42\" width=\"1\" height=\"1\">"
    "<script>document.title='pwned'</script>"
    "<p><a href=\"https://example.net/more\">Read more</a></p>\r\n--alt--\r\n"
)


def plain_mail(subject: str, body: str, sender: str = "carol@example.net") -> str:
    return (f"From: Carol <{sender}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}@example.net>\r\n\r\n{body}\r\n")


#: The server's host name, and the name in its self-signed test certificate.
HOSTNAME = "mx.test.example"

#: [smtp] max_message_size of the test server: request bodies may be 1 MiB more.
MAX_MESSAGE = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymailProcess]:
    root = tmp_path_factory.mktemp("web")
    proc = PymailProcess(root, users=USERS)
    # HTTP and HTTPS ([web] listen_tls) side by side, with a self-signed certificate.
    proc.pymail("tls", "selfsigned", HOSTNAME, "--cert", str(root / "cert.pem"),
                "--key", str(root / "key.pem"))
    proc.ports["web"], proc.ports["web_tls"] = free_port(), free_port()
    smtp = f'[smtp]\nlisten = ["tcp:{proc.ports["smtp"]}:interface=127.0.0.1"]\n'
    text = proc.config_path.read_text()
    assert smtp in text
    proc.config_path.write_text(text.replace(smtp, smtp + f"max_message_size = {MAX_MESSAGE}\n"))
    with proc.config_path.open("a") as config:
        config.write(
            f'[web]\nlisten = ["tcp:{proc.ports["web"]}:interface=127.0.0.1"]\n'
            f'listen_tls = ["tcp:{proc.ports["web_tls"]}:interface=127.0.0.1"]\n'
            'admins = ["alice@example.org"]\n'
            f'[tls]\ncertificate = "{root / "cert.pem"}"\nkey = "{root / "key.pem"}"\n')
    proc.start()  # waits for every port in proc.ports, the web ones included
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = tool("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The HTTPS test's self-signed certificate (curl checks it strictly, with its CA file).
    options.set_capability("acceptInsecureCerts", True)
    driver = webdriver.Chrome(options=options, service=Service(tool("chromedriver")))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("PYMAIL_SCREENSHOTS")
    # A relative directory is taken from the checkout (tests run in a temporary cwd).
    path = (REPO / wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def url(server: PymailProcess, path: str) -> str:
    return f"http://127.0.0.1:{server.ports['web']}{path}"


def smtp_send(server: PymailProcess, text: str, to: str = "alice@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("carol@example.net", [to], text.encode())


def imap_messages(server: PymailProcess, address: str, folder: str,
                  subject: str | None = None) -> list[Any]:
    """The messages of a folder (with ``subject``, if given), read over IMAP."""
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        imap.login(address, USERS[address])
        imap.select(folder)
        criteria = ("SUBJECT", f'"{subject}"') if subject else ("ALL",)
        _, found = imap.search(None, *criteria)
        messages = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[])")
            messages.append(message_from_bytes(data[0][1], policy=policy.default))
        return messages
    finally:
        imap.logout()


def press_send(driver: Any) -> None:
    """Send the compose form and wait for the page saying it was sent."""
    driver.find_element(By.CSS_SELECTOR, "form.compose button.primary").click()
    WebDriverWait(driver, WAIT).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "main"), "Your message was sent"))

def sign_in(driver: Any, server: PymailProcess, address: str) -> None:
    driver.delete_all_cookies()
    driver.get(url(server, "/signin"))
    driver.find_element(By.NAME, "username").send_keys(address)
    driver.find_element(By.NAME, "password").send_keys(USERS[address])
    driver.find_element(By.CSS_SELECTOR, "section.signin button").click()
    try:
        WebDriverWait(driver, WAIT).until(EC.presence_of_element_located((By.ID, "rows")))
    except TimeoutException:
        raise AssertionError(f"sign-in did not reach the inbox: {driver.current_url}\n"
                             f"{driver.page_source[:3000]}") from None


def save(driver: Any, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name
    return path


def csp_violations(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e.get("message", "")
            and "tracker" not in e.get("message", "")]


def test_sign_in_and_read_a_message_sent_over_smtp(server: PymailProcess, browser: Any,
                                                   shots: Path) -> None:
    """Alice signs in, sees the SMTP-delivered message in her inbox, opens it and reads it."""
    smtp_send(server, plain_mail("Quarterly numbers", "Revenue is up 12%.\r\nDetails Monday."))
    browser.get(url(server, "/signin"))
    save(browser, shots, "signin")
    sign_in(browser, server, "alice@example.org")
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr.unread td.subject")
    assert [r.text for r in rows] == ["Quarterly numbers"]
    assert browser.find_element(By.CSS_SELECTOR, "header.top").value_of_css_property(
        "background-color") == "rgba(255, 255, 255, 1)"  # the stylesheet loaded under the CSP
    rows[0].find_element(By.TAG_NAME, "a").click()
    body = WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "pre.text-body")))
    assert body.text == "Revenue is up 12%.\nDetails Monday."
    assert csp_violations(browser) == []


def test_reply_arrives_in_another_account(server: PymailProcess, browser: Any,
                                          shots: Path) -> None:
    """Alice replies to Bob's message from the web; the reply arrives in Bob's IMAP INBOX."""
    smtp_send(server, plain_mail("Lunch?", "Thai or pizza?", sender="bob@example.org"))
    sign_in(browser, server, "alice@example.org")
    link = WebDriverWait(browser, WAIT).until(
        EC.element_to_be_clickable((By.LINK_TEXT, "Lunch?")))
    link.click()
    browser.find_element(By.LINK_TEXT, "Reply").click()
    to = browser.find_element(By.NAME, "to")
    assert to.get_attribute("value") == "bob@example.org"
    assert browser.find_element(By.NAME, "subject").get_attribute("value") == "Re: Lunch?"
    text = browser.find_element(By.NAME, "body")
    text.send_keys(Keys.CONTROL, Keys.HOME)
    text.send_keys("Pizza, at one.")
    save(browser, shots, "compose")
    press_send(browser)
    found = imap_messages(server, "bob@example.org", "INBOX", "Re: Lunch?")
    assert found, "the reply did not arrive in Bob's INBOX"
    reply = found[-1]
    assert reply["From"] == "alice@example.org"
    assert reply["In-Reply-To"] == f"<{abs(hash('Lunch?'))}@example.net>"
    assert reply.get_body(("plain",)).get_content() == (
        "Pizza, at one.\r\n\r\nCarol <bob@example.org> wrote:\r\n> Thai or pizza?\r\n")


def test_new_message_appears_live(server: PymailProcess, browser: Any, shots: Path) -> None:
    """With the inbox open, a message delivered over SMTP shows up without a reload."""
    sign_in(browser, server, "alice@example.org")
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.live") == "1")
    browser.execute_script("window.pymailNoReload = 'still here';")
    smtp_send(server, plain_mail("Live one", "Arrived while you watched."))
    WebDriverWait(browser, WAIT).until(EC.text_to_be_present_in_element(
        (By.ID, "rows"), "Live one"))
    assert browser.execute_script("return window.pymailNoReload") == "still here"
    count = browser.find_element(By.CSS_SELECTOR, "aside.folders li.current .count")
    assert int(count.text) >= 1
    save(browser, shots, "inbox")


def test_screenshots_of_the_main_pages(server: PymailProcess, browser: Any,
                                       shots: Path) -> None:
    """The message view (sanitised HTML, tracker blocked), settings and admin pages render."""
    smtp_send(server, HTML_MAIL)
    sign_in(browser, server, "alice@example.org")
    browser.find_element(By.LINK_TEXT, "November newsletter").click()
    notice = WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "p.notice")))
    assert "1 remote image(s) blocked" in notice.text
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.html-body")
    browser.switch_to.frame(frame)
    assert "Here is what happened" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.TAG_NAME, "script") == []
    browser.switch_to.default_content()
    assert browser.title != "pwned"
    save(browser, shots, "message")
    for name, path, heading in (("settings", "/settings", "Mail client settings"),
                                ("admin", "/admin", "Administration")):
        browser.get(url(server, path))
        assert browser.find_element(By.TAG_NAME, "h1").text == heading
        save(browser, shots, name)
    assert csp_violations(browser) == []


def test_draft_is_saved_resumed_and_sent(server: PymailProcess, browser: Any,
                                         shots: Path) -> None:
    """Alice saves a draft, opens it from Drafts, adds a line and sends it; Drafts is empty."""
    sign_in(browser, server, "alice@example.org")
    browser.get(url(server, "/compose"))
    browser.find_element(By.NAME, "to").send_keys("bob@example.org")
    browser.find_element(By.NAME, "subject").send_keys("Offsite agenda")
    browser.find_element(By.NAME, "body").send_keys("1. Budget")
    browser.find_element(By.CSS_SELECTOR, "form.compose button[value=draft]").click()
    WebDriverWait(browser, WAIT).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "main"), "Draft saved in Drafts."))
    [saved] = imap_messages(server, "alice@example.org", "Drafts")
    assert saved["Subject"] == "Offsite agenda"
    browser.get(url(server, "/mail/Drafts"))
    browser.find_element(By.LINK_TEXT, "Offsite agenda").click()
    WebDriverWait(browser, WAIT).until(
        EC.element_to_be_clickable((By.LINK_TEXT, "Edit draft"))).click()
    body = WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.NAME, "body")))
    assert body.get_attribute("value") == "1. Budget"
    body.send_keys(Keys.CONTROL, Keys.END)
    body.send_keys("\n2. Travel")
    save(browser, shots, "draft")
    press_send(browser)
    [got] = imap_messages(server, "bob@example.org", "INBOX", "Offsite agenda")
    assert got.get_body(("plain",)).get_content() == "1. Budget\r\n2. Travel\r\n"
    assert imap_messages(server, "alice@example.org", "Drafts") == []
    assert csp_violations(browser) == []


def test_folders_are_managed_and_searched(server: PymailProcess, browser: Any,
                                          shots: Path) -> None:
    """Alice creates, renames and deletes a folder on the web, and searches every folder."""
    smtp_send(server, plain_mail("Kickoff notes", "See you there."))
    sign_in(browser, server, "alice@example.org")
    browser.find_element(By.LINK_TEXT, "Folders").click()
    browser.find_element(By.NAME, "name").send_keys("Projects")
    browser.find_element(By.CSS_SELECTOR, "button[value=create]").click()
    WebDriverWait(browser, WAIT).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "main"), "Folder created."))
    def rename(b: Any) -> bool:
        # Found afresh on every try: a node of a page the browser has just
        # replaced is stale (seen once under load).
        row = b.find_element(By.CSS_SELECTOR, 'tr[data-folder="Projects"]')
        new = row.find_element(By.NAME, "new")
        new.clear()
        new.send_keys("Archive.2026")
        row.find_element(By.CSS_SELECTOR, "button[value=rename]").click()
        return True

    WebDriverWait(browser, WAIT, ignored_exceptions=[StaleElementReferenceException]
                  ).until(rename)
    WebDriverWait(browser, WAIT).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "main"), "Folder renamed."))
    save(browser, shots, "folders")
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        imap.login("alice@example.org", USERS["alice@example.org"])
        _, listed = imap.list()
    finally:
        imap.logout()
    names = [line.decode().rsplit(" ", 1)[-1].strip('"') for line in listed]
    assert "Archive.2026" in names and "Projects" not in names
    # Search every folder: the result row names its folder.
    Select(browser.find_element(By.CSS_SELECTOR, "form.search select[name=folder]")
           ).select_by_visible_text("All folders")
    Select(browser.find_element(By.CSS_SELECTOR, "form.search select[name=field]")
           ).select_by_value("subject")
    browser.find_element(By.CSS_SELECTOR, "form.search input[name=q]").send_keys(
        "kickoff", Keys.ENTER)
    def first_result(b: Any) -> tuple[str, str]:
        return (b.find_element(By.CSS_SELECTOR, "table.search-all td.folder").text,
                b.find_element(By.CSS_SELECTOR, "table.search-all td.subject").text)

    found = WebDriverWait(browser, WAIT, ignored_exceptions=[StaleElementReferenceException]
                          ).until(first_result)
    assert found == ("INBOX", "Kickoff notes")
    save(browser, shots, "search")
    # Delete asks first; dismissing keeps the folder, accepting deletes it.
    browser.get(url(server, "/folders"))
    delete = 'tr[data-folder="Archive.2026"] button[value=delete]'
    browser.find_element(By.CSS_SELECTOR, delete).click()
    browser.switch_to.alert.dismiss()
    browser.find_element(By.CSS_SELECTOR, delete).click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, WAIT).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "main"), "Folder deleted"))
    assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-folder="Archive.2026"]') == []
    assert csp_violations(browser) == []


def test_https_sign_in_with_a_secure_cookie(server: PymailProcess, browser: Any,
                                            tmp_path: Path) -> None:
    """Over [web] listen_tls, curl verifies the certificate and gets a Secure session cookie."""
    port = server.ports["web_tls"]
    base = f"https://{HOSTNAME}:{port}"
    jar = str(tmp_path / "cookies")
    curl = [tool("curl"), "-sS", "--max-time", "20",
            "--resolve", f"{HOSTNAME}:{port}:127.0.0.1", "-c", jar, "-b", jar]
    trusted = curl + ["--cacert", str(server.root / "cert.pem")]
    untrusted = subprocess.run(curl + [base + "/signin"], capture_output=True, timeout=30)
    assert untrusted.returncode == 60, untrusted  # not a public CA: refused without the CA file
    page = subprocess.run(trusted + [base + "/signin"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    head = subprocess.run(trusted + [
        "-o", os.devnull, "-D", "-", "--data-urlencode", f"csrf={found.group(1)}",
        "--data-urlencode", "username=alice@example.org",
        "--data-urlencode", f"password={USERS['alice@example.org']}", base + "/signin"],
        capture_output=True, text=True, check=True, timeout=30).stdout
    assert head.startswith("HTTP/1.1 303"), head
    cookie = next(line for line in head.splitlines()
                  if line.lower().startswith("set-cookie: pymail_session="))
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # The same flow in Chromium over https: the browser keeps the cookie as Secure.
    browser.delete_all_cookies()
    browser.get(f"https://127.0.0.1:{port}/signin")
    browser.find_element(By.NAME, "username").send_keys("alice@example.org")
    browser.find_element(By.NAME, "password").send_keys(USERS["alice@example.org"])
    browser.find_element(By.CSS_SELECTOR, "section.signin button").click()
    WebDriverWait(browser, WAIT).until(EC.presence_of_element_located((By.ID, "rows")))
    assert browser.current_url.startswith(f"https://127.0.0.1:{port}/mail/INBOX")
    session = next(c for c in browser.get_cookies() if c["name"] == "pymail_session")
    assert session["secure"] and session["httpOnly"]


def test_oversized_request_is_refused_before_its_body(server: PymailProcess,
                                                      tmp_path: Path) -> None:
    """A POST larger than the limit gets 413 from the server, and curl sends none of it."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (MAX_MESSAGE + 2 * 1024 * 1024))
    answer = tmp_path / "answer.txt"
    result = subprocess.run([
        tool("curl"), "-sS", "--max-time", "20", "-o", str(answer),
        "-w", "%{http_code} %{size_upload}", "-H", "Expect: 100-continue",
        "-H", "Content-Type: application/x-www-form-urlencoded",
        "--data-binary", f"@{big}", url(server, "/signin")],
        capture_output=True, text=True, timeout=30)
    assert result.stdout == "413 0", result
    assert f"at most {MAX_MESSAGE + 1024 * 1024} octets" in answer.read_text()


def test_too_large_attachment_is_stopped_in_the_browser(server: PymailProcess, browser: Any,
                                                        tmp_path: Path) -> None:
    """An attachment over the message size limit is refused on the page, before uploading."""
    sign_in(browser, server, "alice@example.org")
    browser.get(url(server, "/compose"))
    big = tmp_path / "video.bin"
    big.write_bytes(b"\0" * MAX_MESSAGE)
    browser.find_element(By.NAME, "to").send_keys("bob@example.org")
    browser.find_element(By.NAME, "subject").send_keys("Too big")
    browser.find_element(By.NAME, "attachment").send_keys(str(big))
    browser.find_element(By.CSS_SELECTOR, "form.compose button.primary").click()
    note = WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "p.error.size")))
    assert "too large to send" in note.text
    assert browser.current_url == url(server, "/compose")
    assert imap_messages(server, "bob@example.org", "INBOX", "Too big") == []


def test_https_certificate_reloads_on_sighup(server: PymailProcess, tmp_path: Path) -> None:
    """SIGHUP gives new HTTPS connections the renewed certificate, as for IMAPS and POP3S."""
    port = server.ports["web_tls"]
    cert, key = server.root / "cert.pem", server.root / "key.pem"
    saved = cert.read_bytes(), key.read_bytes()

    def reload() -> None:
        before = server.log().count("TLS certificate reloaded")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while server.log().count("TLS certificate reloaded") == before:
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.05)

    def fetch(host: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([
            tool("curl"), "-sS", "--max-time", "20", "-o", os.devnull, "-w", "%{http_code}",
            "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(cert),
            f"https://{host}:{port}/signin"], capture_output=True, text=True, timeout=30)

    try:
        server.pymail("tls", "selfsigned", "renewed.test.example", "--cert", str(cert),
                      "--key", str(key), "--force")
        reload()
        assert fetch("renewed.test.example").stdout == "200"
        assert fetch(HOSTNAME).returncode == 60  # the old name is no longer served
    finally:
        cert.write_bytes(saved[0])
        key.write_bytes(saved[1])
        reload()
    assert fetch(HOSTNAME).stdout == "200"
