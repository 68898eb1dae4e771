"""Drives onionpost's account portal in a real browser (Debian's chromium through chromedriver
and Selenium) with JavaScript disabled, as Tor Browser at its "Safest" level would, for
portal.rs, in two runs around a key change that portal.rs makes arrive in between:

- `first`: sign up with a voucher, sign out, sign in, create an identity and watch it go online
  over the private Tor network, add a contact by its address (its key fetched over its onion)
  and one from a GnuPG contact card (a .vcf file uploaded); prints `IDENTITY=<id>`.
- `second`: sign in, find the contact whose new key is waiting, accept it, redeem a voucher,
  make an app password for a mail client and read its Delta Chat login QR code off the screen
  (zxing-cpp), sign out; then Python's imaplib logs in with that app password, and no more once
  it is revoked.

A screenshot of each page is written to SCREENSHOT_DIR.

Usage: browser.py first PORTAL_URL SCREENSHOT_DIR VOUCHER CONTACT_ADDRESS
       browser.py second PORTAL_URL SCREENSHOT_DIR VOUCHER CONTACT_ADDRESS NEW_FINGERPRINT IMAP_HOST IMAP_PORT
exits non-zero with a message on the first failed expectation.
"""

import imaplib
import io
import os
import sys
import time
import urllib.parse

from portal_http import gnupg_card, onion_host

import zxingcpp
from PIL import Image

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
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


class Session:
    """One browser with its helpers."""

    def __init__(self, base, shots, first_step):
        self.base = base
        self.shots = shots
        self.step = first_step
        self.driver = browser()

    def shot(self, name):
        self.step += 1
        self.driver.save_screenshot(os.path.join(self.shots, f"{self.step:02}-{name}.png"))

    def fill(self, field, value):
        element = self.driver.find_element(By.NAME, field)
        element.clear()
        element.send_keys(value)

    def click_and_wait(self, element):
        # A click returns before the next page has loaded; wait until this page is gone.
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()

        def gone(_driver):
            # A replaced page is stale; chromium sometimes says so as "Node with given id does
            # not belong to the document" rather than as a stale reference.
            try:
                old_page.is_enabled()
                return False
            except WebDriverException:
                return True

        WebDriverWait(self.driver, 60).until(gone)

    def submit(self, action):
        self.click_and_wait(
            self.driver.find_element(By.CSS_SELECTOR, f'form[method="post"][action="{action}"] button[type=submit]')
        )

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def get(self, path):
        self.driver.get(self.base + path)

    def sign_in(self):
        self.get("/sign-in")
        self.fill("login", "erin")
        self.fill("password", PASSWORD)
        self.submit("/sign-in")
        check(self.driver.current_url.endswith("/account"), f"signed in: {self.driver.current_url}")

    def quit(self):
        self.driver.quit()


def first(base, shots, voucher, contact_address):
    page = Session(base, shots, 0)
    driver = page.driver
    try:
        # JavaScript really is off: a page whose script would change its title keeps it.
        driver.get("data:text/html,<title>static</title><script>document.title='scripted'</script>")
        check(driver.title == "static", f"JavaScript is disabled (title {driver.title!r})")

        page.get("/sign-up")
        page.fill("login", "erin")
        page.fill("password", PASSWORD)
        page.fill("password_again", PASSWORD)
        page.fill("voucher", voucher)
        page.shot("sign-up")
        page.submit("/sign-up")
        check(driver.current_url.endswith("/account?done=signed-up"), f"signed up: {driver.current_url}")
        check("erin" in page.text() and "Welcome" in page.text(), "the account page after sign-up")
        page.shot("account")

        page.submit("/sign-out")
        check(driver.current_url.endswith("/sign-in"), f"signed out: {driver.current_url}")
        page.fill("login", "erin")
        page.fill("password", PASSWORD + " but wrong")
        page.submit("/sign-in")
        check("not right" in page.text(), "a wrong password is refused")
        page.shot("sign-in-refused")
        page.fill("login", "erin")
        page.fill("password", PASSWORD)
        page.shot("sign-in")
        page.submit("/sign-in")
        check(driver.current_url.endswith("/account"), f"signed in: {driver.current_url}")

        page.get("/identities")
        check("No identity yet" in page.text(), "no identity at first")
        page.fill("local_part", "erin")
        page.shot("identities")
        page.submit("/identities")
        check("/identities/" in driver.current_url, f"the new identity's page: {driver.current_url}")
        identity = urllib.parse.urlsplit(driver.current_url).path.rsplit("/", 1)[1]
        check("erin@" in page.text() and ".onion" in page.text(), "the identity's address is shown")
        started = time.monotonic()
        while "online" not in driver.find_element(By.CSS_SELECTOR, "td span[class^=state-]").text:
            check(time.monotonic() - started < ONLINE_TIMEOUT_SECS, "the identity goes online")
            time.sleep(2)
            driver.refresh()
        qr = driver.find_element(By.CSS_SELECTOR, "img.qr")
        check(qr.get_attribute("naturalWidth") not in (None, "0"), "the QR code image loads")
        check("openpgp4fpr:" in page.text().lower(), "the openpgp4fpr link is shown")
        page.shot("identity-online")

        # A contact by address: its key comes over its own onion, through tor.
        page.get("/contacts")
        check("No contact yet." in page.text(), "no contact at first")
        started = time.monotonic()
        while True:
            page.get("/contacts")
            page.fill("contact", contact_address)
            page.fill("display_name", "Zed")
            page.submit("/contacts")
            if "done=contact-added" in driver.current_url:
                break
            # The contact's onion may still be publishing: the page says so; try again.
            check("no key could be fetched" in page.text(), f"adding by address: {page.text()}")
            check(time.monotonic() - started < ONLINE_TIMEOUT_SECS, "the contact's onion answers")
            time.sleep(3)
        check("The contact is added" in page.text() and contact_address in page.text(), "the contact's page")
        check("fetched over the contact's own onion" in page.text(), "the key came from the onion")
        page.shot("contact-added")

        # A contact from a card file that GnuPG's key went into.
        card_address = "carol@" + onion_host("browser carol")
        card, fingerprint = gnupg_card(card_address)
        card_file = os.path.join(shots, "carol.vcf")
        with open(card_file, "w") as out:
            out.write(card)
        page.get("/contacts")
        driver.find_element(By.NAME, "card").send_keys(card_file)
        page.shot("contact-card")
        page.submit("/contacts/card")
        check(card_address in page.text() and fingerprint in page.text(), f"the card's contact: {page.text()}")
        page.get("/contacts")
        check(contact_address in page.text() and card_address in page.text(), "both contacts listed")
        page.shot("contacts")
    finally:
        page.quit()
    print(f"IDENTITY={identity}")


def second(base, shots, voucher, contact_address, new_fingerprint, imap_host, imap_port):
    page = Session(base, shots, 20)
    driver = page.driver
    try:
        page.sign_in()
        # The key change waits for erin; she accepts it.
        page.get("/contacts?held=yes")
        check(contact_address in page.text() and "key change waiting" in page.text(), f"held: {page.text()}")
        page.click_and_wait(driver.find_element(By.LINK_TEXT, contact_address))
        check(driver.find_element(By.ID, "held-fingerprint").text == new_fingerprint, "the held key is shown")
        page.shot("key-change")
        page.click_and_wait(driver.find_element(By.CSS_SELECTOR, "#key-change button[value=accept]"))
        check("The new key is pinned" in page.text(), "the key change is accepted")
        check(new_fingerprint in page.text() and "A different key arrived" not in page.text(), "the new key")
        page.shot("key-accepted")
        page.get("/contacts?held=yes")
        check("No contact matches." in page.text(), "nothing waits any more")

        page.get("/account")
        page.fill("code", voucher)
        page.submit("/account/voucher")
        check("The voucher is redeemed." in page.text(), "the voucher is redeemed")
        page.shot("voucher-redeemed")

        # An app password for a mail client, with Delta Chat's login as a QR code.
        page.get("/app-passwords")
        check("No app password yet." in page.text(), "no app password at first")
        page.fill("name", "phone")
        page.submit("/app-passwords")
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
        page.shot("app-password")
        page.get("/app-passwords")
        check("phone" in page.text() and app_password not in driver.page_source, "listed, the code never shown again")
        page.shot("mail-clients")

        page.submit("/sign-out")
        check(driver.current_url.endswith("/sign-in"), "signed out at the end")
        page.get("/account")
        check(driver.current_url.endswith("/sign-in"), "signed out: the account page sends to sign-in")
        page.shot("signed-out")
    finally:
        page.quit()

    # A real mail client logs in with the app password made in the browser.
    client = imaplib.IMAP4(imap_host, int(imap_port))
    typ, _ = client.login("erin", app_password)
    check(typ == "OK", "imaplib logs in with the app password")
    typ, data = client.select("INBOX")
    check(typ == "OK", f"INBOX: {typ} {data}")
    client.logout()

    # Revoked (in the browser again): the mail client is shut out.
    page = Session(base, shots, page.step)
    try:
        page.sign_in()
        page.get("/app-passwords")
        page.click_and_wait(
            page.driver.find_element(By.CSS_SELECTOR, 'form[action^="/app-passwords/"] button[type=submit]')
        )
        check("revoked" in page.text(), "the app password is revoked")
        page.shot("app-password-revoked")
    finally:
        page.quit()
    client = imaplib.IMAP4(imap_host, int(imap_port))
    try:
        client.login("erin", app_password)
        check(False, "a revoked app password still logs in")
    except imaplib.IMAP4.error:
        pass
    finally:
        client.shutdown()


def main():
    phase, base, shots, voucher, contact_address, *rest = sys.argv[1:]
    os.makedirs(shots, exist_ok=True)
    if phase == "first":
        first(base, shots, voucher, contact_address)
    else:
        new_fingerprint, imap_host, imap_port = rest
        second(base, shots, voucher, contact_address, new_fingerprint, imap_host, imap_port)
    print(f"browser {phase}: every step passed; screenshots in {shots}")


if __name__ == "__main__":
    main()
