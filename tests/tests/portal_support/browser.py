"""Drives onionpost's account portal in a real browser (Debian's chromium through chromedriver
and Selenium) with JavaScript disabled, as Tor Browser at its "Safest" level would, for
portal.rs: sign up with a voucher, sign out, sign in, create an identity and watch it go online
over the private Tor network, redeem a voucher, make an app password for a mail client and read
its Delta Chat login QR code off the screen (zxing-cpp), sign out; then Python's imaplib logs in
with that app password, and no more once it is revoked. A screenshot of each page is written to
SCREENSHOT_DIR.

Usage: browser.py PORTAL_URL IMAP_HOST IMAP_PORT SCREENSHOT_DIR VOUCHER VOUCHER; exits non-zero
with a message on the first failed expectation.
"""

import imaplib
import io
import os
import sys
import time
import urllib.parse

import zxingcpp
from PIL import Image

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

PASSWORD = "a browser's long password"
ONLINE_TIMEOUT_SECS = 180


def check(condition, what):
    if not condition:
        raise SystemExit("FAILED: " + what)


def browser():
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,1300",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    # JavaScript off, as Tor Browser's "Safest" level has it.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main():
    base, imap_host, imap_port, shots, first_voucher, second_voucher = sys.argv[1:]
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    step = [0]

    def shot(name):
        step[0] += 1
        driver.save_screenshot(os.path.join(shots, f"{step[0]:02}-{name}.png"))

    def fill(field, value):
        element = driver.find_element(By.NAME, field)
        element.clear()
        element.send_keys(value)

    def click_and_wait(element):
        # A click returns before the next page has loaded; wait until this page is gone.
        old_page = driver.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(driver, 60).until(expected_conditions.staleness_of(old_page))

    def submit(action):
        click_and_wait(driver.find_element(By.CSS_SELECTOR, f'form[action="{action}"] button[type=submit]'))

    def text():
        return driver.find_element(By.TAG_NAME, "body").text

    try:
        # JavaScript really is off: a page whose script would change its title keeps it.
        driver.get("data:text/html,<title>static</title><script>document.title='scripted'</script>")
        check(driver.title == "static", f"JavaScript is disabled (title {driver.title!r})")

        driver.get(base + "/sign-up")
        fill("login", "erin")
        fill("password", PASSWORD)
        fill("password_again", PASSWORD)
        fill("voucher", first_voucher)
        shot("sign-up")
        submit("/sign-up")
        check(driver.current_url.endswith("/account?done=signed-up"), f"signed up: {driver.current_url}")
        check("erin" in text() and "Welcome" in text(), "the account page after sign-up")
        shot("account")

        submit("/sign-out")
        check(driver.current_url.endswith("/sign-in"), f"signed out: {driver.current_url}")
        fill("login", "erin")
        fill("password", PASSWORD + " but wrong")
        submit("/sign-in")
        check("not right" in text(), "a wrong password is refused")
        shot("sign-in-refused")
        fill("login", "erin")
        fill("password", PASSWORD)
        shot("sign-in")
        submit("/sign-in")
        check(driver.current_url.endswith("/account"), f"signed in: {driver.current_url}")

        driver.get(base + "/identities")
        check("No identity yet" in text(), "no identity at first")
        fill("local_part", "erin")
        shot("identities")
        submit("/identities")
        check("/identities/" in driver.current_url, f"the new identity's page: {driver.current_url}")
        check("erin@" in text() and ".onion" in text(), "the identity's address is shown")
        started = time.monotonic()
        while "online" not in driver.find_element(By.CSS_SELECTOR, "td span[class^=state-]").text:
            check(time.monotonic() - started < ONLINE_TIMEOUT_SECS, "the identity goes online")
            time.sleep(2)
            driver.refresh()
        qr = driver.find_element(By.CSS_SELECTOR, "img.qr")
        check(qr.get_attribute("naturalWidth") not in (None, "0"), "the QR code image loads")
        check("openpgp4fpr:" in text().lower(), "the openpgp4fpr link is shown")
        shot("identity-online")

        driver.get(base + "/account")
        fill("code", second_voucher)
        submit("/account/voucher")
        check("The voucher is redeemed." in text(), "the voucher is redeemed")
        shot("voucher-redeemed")

        # An app password for a mail client, with Delta Chat's login as a QR code.
        driver.get(base + "/app-passwords")
        check("No app password yet." in text(), "no app password at first")
        fill("name", "phone")
        submit("/app-passwords")
        app_password = driver.find_element(By.ID, "app-password").text.strip()
        check(len(app_password) >= 24, f"the app password is shown once: {app_password!r}")
        uri = driver.find_element(By.CSS_SELECTOR, ".dclogin-uri").text.replace("\n", "")
        image = Image.open(io.BytesIO(driver.find_element(By.CSS_SELECTOR, ".dclogin svg").screenshot_as_png))
        decoded = [result.text for result in zxingcpp.read_barcodes(image)]
        check(decoded == [uri], f"the Delta Chat QR code decodes to the login shown: {decoded} vs {uri!r}")
        parsed = urllib.parse.urlsplit(decoded[0])
        query = dict(urllib.parse.parse_qsl(parsed.query))
        address = parsed.path
        check(parsed.scheme == "dclogin" and address.startswith("erin@") and address.endswith(".onion"), f"{parsed}")
        onion = address.split("@", 1)[1]
        check(query == {"p": app_password, "v": "1", "ih": onion, "ip": "143", "iu": "erin", "is": "plain",
                        "sh": onion, "sp": "587", "su": "erin", "spw": app_password, "ss": "plain"},
              f"the Delta Chat login names the identity's onion, the login and the app password: {query}")
        shot("app-password")
        driver.get(base + "/app-passwords")
        check("phone" in text() and app_password not in driver.page_source, "listed, the code never shown again")
        shot("mail-clients")

        submit("/sign-out")
        check(driver.current_url.endswith("/sign-in"), "signed out at the end")
        driver.get(base + "/account")
        check(driver.current_url.endswith("/sign-in"), "signed out: the account page sends to sign-in")
        shot("signed-out")
    finally:
        driver.quit()

    # A real mail client logs in with the app password made in the browser.
    client = imaplib.IMAP4(imap_host, int(imap_port))
    typ, _ = client.login("erin", app_password)
    check(typ == "OK", "imaplib logs in with the app password")
    typ, data = client.select("INBOX")
    check(typ == "OK", f"INBOX: {typ} {data}")
    client.logout()

    # Revoked (in the browser again): the mail client is shut out.
    driver = browser()
    try:
        driver.get(base + "/sign-in")
        fill("login", "erin")
        fill("password", PASSWORD)
        submit("/sign-in")
        driver.get(base + "/app-passwords")
        click_and_wait(driver.find_element(By.CSS_SELECTOR, 'form[action^="/app-passwords/"] button[type=submit]'))
        check("revoked" in text(), "the app password is revoked")
        shot("app-password-revoked")
    finally:
        driver.quit()
    client = imaplib.IMAP4(imap_host, int(imap_port))
    try:
        client.login("erin", app_password)
        check(False, "a revoked app password still logs in")
    except imaplib.IMAP4.error:
        pass
    finally:
        client.shutdown()
    print("browser: every step passed; screenshots in " + shots)


if __name__ == "__main__":
    main()
