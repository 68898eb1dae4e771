"""Drives onionpost's account portal in a real browser (Debian's chromium through chromedriver
and Selenium) with JavaScript disabled, as Tor Browser at its "Safest" level would, for
portal.rs: sign up with a voucher, sign out, sign in, create an identity and watch it go online
over the private Tor network, redeem a voucher, sign out; then read mail with Python's imaplib
with the same login. A screenshot of each page is written to SCREENSHOT_DIR.

Usage: browser.py PORTAL_URL IMAP_HOST IMAP_PORT SCREENSHOT_DIR VOUCHER VOUCHER; exits non-zero
with a message on the first failed expectation.
"""

import imaplib
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

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

    def submit(action):
        driver.find_element(By.CSS_SELECTOR, f'form[action="{action}"] button[type=submit]').click()

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

        submit("/sign-out")
        check(driver.current_url.endswith("/sign-in"), "signed out at the end")
        driver.get(base + "/account")
        check(driver.current_url.endswith("/sign-in"), "signed out: the account page sends to sign-in")
        shot("signed-out")
    finally:
        driver.quit()

    # The account the browser made reads mail with a real client.
    client = imaplib.IMAP4(imap_host, int(imap_port))
    typ, _ = client.login("erin", PASSWORD)
    check(typ == "OK", "imaplib logs in with the portal's account")
    typ, data = client.select("INBOX")
    check(typ == "OK", f"INBOX: {typ} {data}")
    client.logout()
    print("browser: every step passed; screenshots in " + shots)


if __name__ == "__main__":
    main()
