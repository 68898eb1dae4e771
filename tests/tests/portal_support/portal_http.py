"""Checks onionpost's account portal over HTTP with Python's urllib, for portal.rs: every
/account/v1 route and every form against no session, an expired session, another account's
session and a missing or wrong form token; identical replies for a made-up login and a wrong
password; what sign-up, vouchers, password changes and deletion do.

Usage: portal_http.py PORTAL_URL DATA_DIR VOUCHER... (at least five unspent vouchers); exits
non-zero with a message on the first failed expectation.
"""

import base64
import hashlib
import http.cookiejar
import json
import os
import re
import sqlite3
import subprocess
import sys
import hmac
import struct
import tempfile
import time
import uuid
import urllib.error
import urllib.parse
import urllib.request

PASSWORD = "correct horse battery staple"


def check(condition, what):
    if not condition:
        raise SystemExit("FAILED: " + what)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    """An HTTP client with its own cookie jar; redirects are returned, not followed."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(self, method, path, body=None, token=None, content_type=None, headers=None):
        data = None
        all_headers = dict(headers or {})
        if isinstance(body, dict) and content_type is None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        elif isinstance(body, dict):
            data = urllib.parse.urlencode(body).encode()
            all_headers["Content-Type"] = content_type
        elif body is not None:
            data = body
            if content_type:
                all_headers["Content-Type"] = content_type
        if token:
            all_headers["Authorization"] = "Bearer " + token
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=all_headers
        )
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def api(self, method, path, body=None, token=None):
        status, headers, raw = self.request(method, path, body, token)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = raw.decode(errors="replace")
        return status, value

    def form(self, path, fields):
        return self.request("POST", path, fields, content_type="application/x-www-form-urlencoded")

    def cookie(self, name):
        for cookie in self.jar:
            if cookie.name == name:
                return cookie
        return None


def onion_host(seed):
    """A v3 onion host (checksum and version right) for a made-up ed25519 key."""
    public = hashlib.sha256(seed.encode()).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + public + b"\x03").digest()[:2]
    return base64.b32encode(public + checksum + b"\x03").decode().lower() + ".onion"


def gnupg_card(address):
    """A contact card (vCard 4.0) for a key GnuPG makes for `address`, as someone who keeps
    their key in GnuPG would hand it over; and the key's fingerprint."""
    with tempfile.TemporaryDirectory() as home:
        gpg = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(gpg + ["--quick-gen-key", address, "ed25519", "sign", "never"], check=True)
        listed = subprocess.run(gpg + ["--with-colons", "--list-keys", address], check=True, capture_output=True, text=True)
        fingerprint = next(line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:"))
        subprocess.run(gpg + ["--quick-add-key", fingerprint, "cv25519", "encr", "never"], check=True)
        key = subprocess.run(gpg + ["--export", fingerprint], check=True, capture_output=True).stdout
    card = (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Someone\r\n"
        f"EMAIL:{address}\r\n"
        f"KEY:data:application/pgp-keys;base64,{base64.b64encode(key).decode()}\r\n"
        "END:VCARD\r\n"
    )
    return card, fingerprint


def multipart(fields, files):
    """A multipart/form-data body, as a browser sends a form with a file."""
    boundary = "----onionpost" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), "multipart/form-data; boundary=" + boundary


def totp(secret_base32, at=None, offset=0):
    """An RFC 6238 code (SHA-1, six digits, 30 s), written here apart from the portal's."""
    key = base64.b32decode(secret_base32 + "=" * (-len(secret_base32) % 8))
    step = int((time.time() if at is None else at) // 30) + offset
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    start = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[start:start + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def second_factor_checks(api, alice, password):
    """Two-factor sign-in through /account/v1: on in two steps, then a right password with a
    missing, wrong or reused code reads exactly like a wrong password; off with a fresh code."""
    status, value = api.api("GET", "/account/v1/account/second-factor", token=alice)
    check(status == 200 and value == {"enabled": False}, f"off at first: {status} {value}")
    status, enrolment = api.api("POST", "/account/v1/account/second-factor", token=alice)
    check(status == 201 and enrolment["otpauth_uri"].startswith("otpauth://totp/onionpost%3Aalice?secret="), f"{enrolment}")
    secret = enrolment["secret"]
    check(api.api("POST", "/account/v1/session", {"login": "alice", "password": password})[0] == 201,
          "not asked for a code before it is confirmed")
    status, value = api.api("POST", "/account/v1/account/second-factor/confirm", {"code": "000000"}, alice)
    check(status == 422 and value["field"] == "code", f"a wrong first code: {status} {value}")
    now = time.time()
    status, value = api.api("POST", "/account/v1/account/second-factor/confirm", {"code": totp(secret, now)}, alice)
    check(status == 204, f"confirmed: {status} {value}")
    check(api.api("GET", "/account/v1/account/second-factor", token=alice)[1] == {"enabled": True}, "on")
    status, value = api.api("POST", "/account/v1/account/second-factor", token=alice)
    check(status == 409, f"on already: {status} {value}")

    made_up = api.request("POST", "/account/v1/session", {"login": "nobody-here", "password": password, "code": "123456"})
    for code in (None, "123456", totp(secret, now)):
        body = {"login": "alice", "password": password}
        if code is not None:
            body["code"] = code
        answer = api.request("POST", "/account/v1/session", body)
        check(answer[0] == 401 and answer[2] == made_up[2], f"code {code!r}: {answer[0]} {answer[2]!r} vs {made_up[2]!r}")
    status, value = api.api("POST", "/account/v1/session",
                            {"login": "alice", "password": password, "code": totp(secret, now, 1)})
    check(status == 201, f"the password and the next code sign in: {status} {value}")

    status, value = api.api("DELETE", "/account/v1/account/second-factor", {"password": "wrong wrong", "code": "1"}, alice)
    check(status == 422 and value["field"] == "password", f"off needs the password: {status} {value}")
    # The steps up to now+1 are spent; wait for a step after them to come into the window.
    time.sleep(max(0.0, (int(now // 30) + 1) * 30 - time.time()) + 1)
    status, value = api.api("DELETE", "/account/v1/account/second-factor",
                            {"password": password, "code": totp(secret, offset=1)}, alice)
    check(status == 204, f"turned off: {status} {value}")
    check(api.api("POST", "/account/v1/session", {"login": "alice", "password": password})[0] == 201,
          "the password alone signs in again")


def form_token(page):
    found = re.search(r'name="form_token" value="([0-9a-f]+)"', page)
    check(found is not None, "the page has a form token:\n" + page[:500])
    return found.group(1)


def expire(data_dir, token):
    """Makes a session expired, as time would, in the portal's own database."""
    db = sqlite3.connect(f"{data_dir}/portal.sqlite3")
    changed = db.execute(
        "UPDATE sessions SET expires_at_ms = 0 WHERE session_hash = ?",
        (hashlib.sha256(token.encode()).hexdigest(),),
    ).rowcount
    db.commit()
    db.close()
    check(changed == 1, "the session to expire exists")


def problem(value, kind):
    check(isinstance(value, dict), f"a problem document, got {value!r}")
    check(value.get("type") == "urn:onionpost:problem:" + kind, f"problem {kind}, got {value!r}")


def api_checks(base, data_dir, vouchers):
    api = Client(base)

    # The document lists every route; each but the two that open a session needs one.
    status, document = api.api("GET", "/account/v1/openapi.json")
    check(status == 200, f"openapi.json: {status}")
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    ]
    check(len(operations) >= 24, f"documented operations: {operations}")
    open_routes = {("POST", "/account/v1/session"), ("POST", "/account/v1/signup")}

    # Sign-up by the voucher policy.
    status, value = api.api("POST", "/account/v1/signup", {"login": "alice", "password": PASSWORD})
    check(status == 403, f"sign-up without a voucher: {status} {value}")
    problem(value, "sign-up-refused")
    status, value = api.api(
        "POST", "/account/v1/signup",
        {"login": "alice", "password": PASSWORD, "voucher": "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"},
    )
    check(status == 422 and value.get("field") == "voucher", f"unknown voucher: {status} {value}")
    status, value = api.api(
        "POST", "/account/v1/signup", {"login": "alice", "password": PASSWORD, "voucher": vouchers[0]}
    )
    check(status == 201, f"sign-up: {status} {value}")
    alice = value["token"]
    status, value = api.api(
        "POST", "/account/v1/signup", {"login": "bob", "password": PASSWORD, "voucher": vouchers[1]}
    )
    check(status == 201, f"sign-up bob: {status} {value}")
    bob = value["token"]
    status, value = api.api(
        "POST", "/account/v1/signup", {"login": "carol", "password": PASSWORD, "voucher": vouchers[0]}
    )
    check(status == 409, f"a spent voucher signs nobody up: {status} {value}")
    status, value = api.api(
        "POST", "/account/v1/signup", {"login": "alice", "password": PASSWORD, "voucher": vouchers[2]}
    )
    check(status == 409, f"a taken login: {status} {value}")

    status, account = api.api("GET", "/account/v1/account", token=alice)
    check(status == 200 and account["login"] == "alice", f"account: {status} {account}")
    check(account["plan"] == "voucher-plan", f"the voucher's plan: {account}")

    # Every route without a session, with a made-up one, and with an expired one: 401.
    status, value = api.api("POST", "/account/v1/session", {"login": "alice", "password": PASSWORD})
    check(status == 201, f"sign-in: {status} {value}")
    expiring = value["token"]
    expire(data_dir, expiring)
    for method, path in operations:
        if (method, path) in open_routes or path.endswith("openapi.json"):
            continue
        concrete = path.replace("{id}", "idn_none").replace("{address}", "none")
        for token in (None, "0" * 64, "not a token", expiring):
            status, value = api.api(method, concrete, {} if method in ("POST", "PUT", "DELETE") else None, token)
            check(status == 401, f"{method} {concrete} with {token!r}: {status} {value}")
            problem(value, "signed-out")

    # Identities; another account's are "no such identity", exactly like none.
    status, mine = api.api("POST", "/account/v1/identities", {"local_part": "alice"}, alice)
    check(status == 201, f"create identity: {status} {mine}")
    check(mine["address"].startswith("alice@") and mine["address"].endswith(".onion"), f"{mine}")
    check(mine["openpgp4fpr"].lower().startswith("openpgp4fpr:" + mine["fingerprint"].lower()), f"{mine}")
    status, theirs = api.api("POST", "/account/v1/identities", {"local_part": "bob"}, bob)
    check(status == 201, f"create bob's identity: {status} {theirs}")
    missing = api.request("GET", "/account/v1/identities/idn_doesnotexist", token=bob)
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/qr.svg")):
        other = api.request(method, f"/account/v1/identities/{mine['id']}{suffix}", token=bob)
        check(other[0] == 404, f"{method} alice's identity{suffix} as bob: {other[0]}")
        check(other[2] == missing[2], f"another's identity reads like none: {other[2]!r} vs {missing[2]!r}")
    status, listed = api.api("GET", "/account/v1/identities", token=bob)
    check([i["id"] for i in listed] == [theirs["id"]], f"bob lists only his: {listed}")
    status, value = api.api("GET", f"/account/v1/identities/{mine['id']}", token=alice)
    check(status == 200 and value["id"] == mine["id"], f"alice's identity survives bob: {status} {value}")
    status, headers, svg = api.request("GET", f"/account/v1/identities/{mine['id']}/qr.svg", token=alice)
    check(status == 200 and svg.lstrip().startswith(b"<") and b"svg" in svg[:300], f"qr: {status} {svg[:80]!r}")

    # App passwords: alice's are hers alone.
    status, created = api.api("POST", "/account/v1/app-passwords", {"name": "laptop"}, alice)
    check(status == 201 and len(created["password"]) >= 24, f"app password: {status} {created}")
    check(all(login["dclogin"].startswith("dclogin:alice@") for login in created["delta_chat"]), f"{created}")
    status, listed = api.api("GET", "/account/v1/app-passwords", token=alice)
    check([p["id"] for p in listed] == [created["id"]] and "password" not in listed[0], f"{listed}")
    check(api.api("GET", "/account/v1/app-passwords", token=bob)[1] == [], "bob sees none of alice's")
    none = api.request("DELETE", "/account/v1/app-passwords/app_doesnotexist", token=bob)
    other = api.request("DELETE", f"/account/v1/app-passwords/{created['id']}", token=bob)
    check(none[0] == other[0] == 404 and none[2] == other[2], f"bob revoking alice's: {other[0]} {other[2]!r}")
    status, value = api.api("POST", "/account/v1/session", {"login": "alice", "password": created["password"]})
    check(status == 401, f"an app password does not open the portal: {status} {value}")
    check(api.api("DELETE", f"/account/v1/app-passwords/{created['id']}", token=alice)[0] == 204, "revoke")
    check(api.api("GET", "/account/v1/app-passwords", token=alice)[1] == [], "revoked")

    # The same reply for a made-up login and a real one with a wrong password.
    made_up = api.request("POST", "/account/v1/session", {"login": "nobody-here", "password": PASSWORD + "x"})
    wrong = api.request("POST", "/account/v1/session", {"login": "alice", "password": PASSWORD + "x"})
    check(made_up[0] == wrong[0] == 401, f"failed sign-ins: {made_up[0]} {wrong[0]}")
    check(made_up[2] == wrong[2], f"identical bodies: {made_up[2]!r} vs {wrong[2]!r}")

    contact_checks(api, alice, bob, mine, theirs)

    # Vouchers.
    status, extended = api.api("POST", "/account/v1/account/vouchers", {"code": vouchers[2]}, alice)
    check(status == 200 and extended["paid_until"] > account["paid_until"], f"redeem: {status} {extended}")
    status, value = api.api("POST", "/account/v1/account/vouchers", {"code": vouchers[2]}, bob)
    check(status == 409, f"a voucher redeems once: {status} {value}")

    # A password change ends the other sessions, not this one.
    status, value = api.api("POST", "/account/v1/session", {"login": "alice", "password": PASSWORD})
    other_alice = value["token"]
    status, value = api.api(
        "PUT", "/account/v1/account/password",
        {"current_password": "wrong wrong wrong", "new_password": PASSWORD + "2"}, alice,
    )
    check(status == 422 and value["field"] == "current_password", f"wrong current: {status} {value}")
    status, value = api.api(
        "PUT", "/account/v1/account/password",
        {"current_password": PASSWORD, "new_password": PASSWORD + "2"}, alice,
    )
    check(status == 204, f"password change: {status} {value}")
    check(api.api("GET", "/account/v1/account", token=other_alice)[0] == 401, "other session ended")
    check(api.api("GET", "/account/v1/account", token=alice)[0] == 200, "this session lives on")
    status, value = api.api("POST", "/account/v1/session", {"login": "alice", "password": PASSWORD + "2"})
    check(status == 201, f"the new password signs in: {status} {value}")

    # Deleting bob's account takes his identity and sessions with it.
    status, value = api.api("DELETE", "/account/v1/account", {"password": "not it at all"}, bob)
    check(status == 422, f"deletion needs the password: {status} {value}")
    status, value = api.api("DELETE", "/account/v1/account", {"password": PASSWORD}, bob)
    check(status == 204, f"delete bob: {status} {value}")
    check(api.api("GET", "/account/v1/account", token=bob)[0] == 401, "bob's session ended")
    status, value = api.api("POST", "/account/v1/session", {"login": "bob", "password": PASSWORD})
    check(status == 401, f"bob is gone: {status} {value}")

    second_factor_checks(api, alice, PASSWORD + "2")

    # Signing out.
    check(api.api("DELETE", "/account/v1/session", token=alice)[0] == 204, "sign out")
    check(api.api("GET", "/account/v1/account", token=alice)[0] == 401, "signed out")
    return mine


def contact_checks(api, alice, bob, mine, theirs):
    """The address book, bundles, carriers and carry statements through /account/v1: alice's
    are hers alone, and bob's attempts on them read exactly like attempts on nothing."""
    carol_address = "carol@" + onion_host("carol")
    card, fingerprint = gnupg_card(carol_address)
    status, carol = api.api("POST", "/account/v1/contacts", {"vcard": card, "display_name": "Carol"}, alice)
    check(status == 201, f"a contact from a GnuPG contact card: {status} {carol}")
    check(carol["address"] == carol_address and carol["fingerprint"] == fingerprint, f"{carol}")
    check(carol["key_source"] == "manual" and not carol["verified"], f"{carol}")
    status, value = api.api("POST", "/account/v1/contacts", {"vcard": card}, alice)
    check(status == 409, f"the same contact twice: {status} {value}")
    status, value = api.api("POST", "/account/v1/contacts", {"vcard": "BEGIN:VCARD\r\nEND:VCARD"}, alice)
    check(status == 422 and value["field"] == "vcard", f"a card without EMAIL or KEY: {status} {value}")
    status, value = api.api("POST", "/account/v1/contacts", {"address": "not an address"}, alice)
    check(status == 422 and value["field"] == "address", f"a malformed address: {status} {value}")
    status, value = api.api("POST", "/account/v1/contacts", {"openpgp4fpr": "openpgp4fpr:ZZZ"}, alice)
    check(status == 422 and value["field"] == "openpgp4fpr", f"a malformed link: {status} {value}")
    status, value = api.api("POST", "/account/v1/contacts", {"address": carol_address, "vcard": card}, alice)
    check(status == 422, f"two ways at once: {status} {value}")
    status, value = api.api("POST", "/account/v1/contacts", {}, alice)
    check(status == 422 and value["field"] == "address", f"nothing to add: {status} {value}")

    status, value = api.api(
        "PATCH", f"/account/v1/contacts/{carol['id']}",
        {"display_name": "Carol K", "verified": True, "designated_carriers": [onion_host("carrier")]}, alice,
    )
    check(status == 200 and value["display_name"] == "Carol K" and value["verified"], f"update: {status} {value}")
    check(value["designated_carriers"] == [onion_host("carrier")], f"designated carriers: {value}")
    status, value = api.api("PATCH", f"/account/v1/contacts/{carol['id']}", {"designated_carriers": ["nope"]}, alice)
    check(status == 422 and value["field"] == "designated_carriers", f"a bad carrier: {status} {value}")
    status, value = api.api(
        "POST", f"/account/v1/contacts/{carol['id']}/key-change", {"fingerprint": fingerprint, "accept": True}, alice
    )
    check(status in (409, 422), f"no key change is waiting: {status} {value}")
    status, page = api.api("GET", "/account/v1/contacts?q=carol", token=alice)
    check(status == 200 and [c["id"] for c in page["contacts"]] == [carol["id"]], f"search: {status} {page}")
    status, page = api.api("GET", "/account/v1/contacts?held=true", token=alice)
    check(status == 200 and page["contacts"] == [], f"no key change held: {status} {page}")
    status, value = api.api("GET", "/account/v1/contacts?held=maybe", token=alice)
    check(status in (400, 422), f"a malformed query: {status} {value}")

    # Bob: nothing of alice's address book, and the same answer as for a contact that is not.
    status, page = api.api("GET", "/account/v1/contacts", token=bob)
    check(status == 200 and page["contacts"] == [], f"bob's address book is his own: {page}")
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"display_name": "mine now"}),
        ("DELETE", "", None),
        ("POST", "/key-change", {"fingerprint": fingerprint, "accept": False}),
        ("POST", "/introduce", {"to": carol["id"], "from_identity": theirs["id"]}),
    ):
        none = api.request(method, f"/account/v1/contacts/ctc_doesnotexist{suffix}", body, bob)
        other = api.request(method, f"/account/v1/contacts/{carol['id']}{suffix}", body, bob)
        check(other[0] == none[0] == 404, f"bob {method} alice's contact{suffix}: {other[0]} {other[2]!r}")
        check(other[2] == none[2], f"another's contact reads like none: {other[2]!r} vs {none[2]!r}")
    status, value = api.api("GET", f"/account/v1/contacts/{carol['id']}", token=alice)
    check(status == 200 and value["display_name"] == "Carol K", f"alice's contact survived bob: {status} {value}")
    # Alice cannot introduce through bob's identity, nor a contact to itself.
    status, value = api.api(
        "POST", f"/account/v1/contacts/{carol['id']}/introduce", {"to": carol["id"], "from_identity": mine["id"]}, alice
    )
    check(status == 422 and value["field"] == "to", f"a contact to itself: {status} {value}")

    # How introductions are taken: at once by default; alice asks to confirm them, bob's stays.
    status, value = api.api("GET", "/account/v1/contacts-policy", token=alice)
    check(status == 200 and value == {"confirm_introductions": False}, f"default policy: {status} {value}")
    status, value = api.api("PUT", "/account/v1/contacts-policy", {"confirm_introductions": True}, alice)
    check(status == 200 and value == {"confirm_introductions": True}, f"policy set: {status} {value}")
    status, value = api.api("PUT", "/account/v1/contacts-policy", {"confirm": True}, alice)
    check(status in (400, 422), f"an unknown field: {status} {value}")
    check(api.api("GET", "/account/v1/contacts-policy", token=alice)[1]["confirm_introductions"], "alice's policy kept")
    check(not api.api("GET", "/account/v1/contacts-policy", token=bob)[1]["confirm_introductions"], "bob's untouched")

    # Carriers and carry statements for alice's identity; bob cannot touch them.
    carriers = [onion_host("first carrier"), onion_host("second carrier")]
    status, value = api.api("PUT", f"/account/v1/identities/{mine['id']}/carriers", {"carriers": carriers}, alice)
    check(status == 200 and value["preferred_carriers"] == carriers, f"preferred carriers: {status} {value}")
    status, value = api.api("PUT", f"/account/v1/identities/{mine['id']}/carriers", {"carriers": ["x.onion"]}, alice)
    check(status == 422 and value["field"] == "carriers", f"a bad carrier: {status} {value}")
    status, value = api.api(
        "POST", f"/account/v1/identities/{mine['id']}/carry-statements", {"carrier": carriers[0], "kind": "request"}, alice
    )
    check(status == 201 and "BEGIN PGP" in value["statement"] and value["sent_to"] is None, f"carry request: {status} {value}")
    # Sending it in mail needs the queue, which this carrier does not run: a clear 503, nothing
    # sent (carriers.rs sends statements in mail between carriers over tor).
    status, value = api.api(
        "POST",
        f"/account/v1/identities/{mine['id']}/carry-statements",
        {"carrier": carriers[1], "kind": "request", "send": True},
        alice,
    )
    check(
        status == 503 and value["type"] == "urn:onionpost:problem:unavailable" and "queue" in value["detail"],
        f"carry request sent without a queue: {status} {value}",
    )
    # A new key on the same address; the identity shows it.
    before = api.api("GET", f"/account/v1/identities/{mine['id']}", token=alice)[1]
    status, value = api.api("POST", f"/account/v1/identities/{mine['id']}/rotate-key", token=alice)
    check(
        status == 200
        and value["previous_fingerprint"] == before["fingerprint"]
        and value["fingerprint"] != before["fingerprint"]
        and value["peers_announced"] == 0,
        f"rotate key: {status} {value}",
    )
    after = api.api("GET", f"/account/v1/identities/{mine['id']}", token=alice)[1]
    check(after["fingerprint"] == value["fingerprint"] and after["address"] == before["address"], f"{after}")
    status, value = api.api(
        "POST", f"/account/v1/identities/{mine['id']}/export", {"passphrase": "short"}, alice
    )
    check(status == 422 and value["field"] == "passphrase", f"a short passphrase: {status} {value}")
    status, value = api.api(
        "POST", f"/account/v1/identities/{mine['id']}/export", {"passphrase": "a long enough passphrase"}, alice
    )
    check(status == 200 and len(base64.b64decode(value["bundle"])) > 100, f"export: {status} {value}")
    bundle = value["bundle"]
    status, value = api.api(
        "POST", "/account/v1/identities/import", {"bundle": bundle, "passphrase": "not the passphrase"}, bob
    )
    check(status == 422 and value["field"] == "bundle", f"a wrong passphrase opens nothing: {status} {value}")
    status, value = api.api(
        "POST", "/account/v1/identities/import", {"bundle": bundle, "passphrase": "a long enough passphrase"}, bob
    )
    check(status == 409, f"the same identity cannot come in twice on one carrier: {status} {value}")
    status, value = api.api("POST", "/account/v1/identities/import", {"bundle": "!!", "passphrase": "x" * 12}, bob)
    check(status == 422 and value["field"] == "bundle", f"not base64: {status} {value}")
    for method, suffix, body in (
        ("PUT", "/carriers", {"carriers": []}),
        ("POST", "/carry-statements", {"carrier": carriers[0], "kind": "withdraw"}),
        ("POST", "/export", {"passphrase": "a long enough passphrase"}),
        ("POST", "/rotate-key", None),
    ):
        none = api.request(method, f"/account/v1/identities/idn_doesnotexist{suffix}", body, bob)
        other = api.request(method, f"/account/v1/identities/{mine['id']}{suffix}", body, bob)
        check(other[0] == none[0] == 404, f"bob {method} alice's identity{suffix}: {other[0]} {other[2]!r}")
        check(other[2] == none[2], f"another's identity reads like none ({suffix})")
    status, value = api.api("GET", f"/account/v1/identities/{mine['id']}", token=alice)
    check(value["preferred_carriers"] == carriers, f"alice's carriers survived bob: {value}")

    # This carrier runs no gateway: no aliases, and revoking one finds nothing (gateway.rs tests
    # aliases on a carrier that has one).
    status, value = api.api("GET", "/account/v1/aliases", token=alice)
    check(status == 200 and value == {"aliases": [], "next_page_token": None, "gateway_offered": False}, f"{value}")
    status, value = api.api("POST", "/account/v1/aliases/x@gateway.test/revoke", token=alice)
    check(status == 404, f"no alias to revoke: {status} {value}")


def form_checks(base, data_dir, vouchers, alice_identity):
    # Carol signs up in the browser's way; dave too, as the other account.
    carol = Client(base)
    status, headers, page = carol.request("GET", "/sign-up")
    page = page.decode()
    check(status == 200, f"sign-up page: {status}")
    check("<script" not in page.lower(), "no script on the sign-up page")
    check("default-src 'none'" in headers.get("Content-Security-Policy", ""), f"CSP: {headers}")
    form_cookie = carol.cookie("onionpost_form")
    check(form_cookie is not None, "the sign-up page sets a form cookie")
    token = form_token(page)
    fields = {"login": "carol", "password": PASSWORD, "password_again": PASSWORD, "voucher": vouchers[3]}
    status, _, page = carol.form("/sign-up", fields)
    check(status == 403, f"sign-up without the form token: {status}")
    status, _, page = carol.form("/sign-up", dict(fields, form_token="0" * 64))
    check(status == 403, f"sign-up with a wrong form token: {status}")
    status, headers, _ = carol.form("/sign-up", dict(fields, form_token=token))
    check(status == 303 and headers.get("Location") == "/account?done=signed-up", f"sign-up: {status} {headers}")
    set_cookies = headers.get_all("Set-Cookie") or []
    session_set = [value for value in set_cookies if value.startswith("onionpost_session=")]
    check(len(session_set) == 1, f"a session cookie: {set_cookies}")
    check("HttpOnly" in session_set[0] and "SameSite=Strict" in session_set[0], f"cookie attributes: {session_set}")
    check(carol.cookie("onionpost_session") is not None, "the browser keeps the session cookie")

    dave = Client(base)
    page = dave.request("GET", "/sign-up")[2].decode()
    status, headers, _ = dave.form(
        "/sign-up",
        {"login": "dave", "password": PASSWORD, "password_again": PASSWORD,
         "voucher": vouchers[4], "form_token": form_token(page)},
    )
    check(status == 303, f"dave signs up: {status}")

    # Sign-in: the same page for a made-up login and a wrong password.
    stranger = Client(base)
    page = stranger.request("GET", "/sign-in")[2].decode()
    token = form_token(page)
    wrong = stranger.form("/sign-in", {"login": "dave", "password": "x" * 20, "form_token": token})
    made_up = stranger.form("/sign-in", {"login": "davf", "password": "x" * 20, "form_token": token})
    check(made_up[0] == wrong[0] == 401, f"failed sign-ins: {made_up[0]} {wrong[0]}")
    # The page shows the login typed back in its field; apart from that, not a byte differs.
    check(
        wrong[2].replace(b'value="dave"', b"") == made_up[2].replace(b'value="davf"', b""),
        "a made-up login and a wrong password read the same",
    )
    check(stranger.form("/sign-in", {"login": "dave", "password": PASSWORD})[0] == 403, "sign-in without a form token")

    # Signing in rotates the session: a new cookie, unlike any before.
    before = carol.cookie("onionpost_session").value
    page = carol.request("GET", "/account")[2].decode()
    check("carol" in page and "voucher-plan" in page, "carol's account page")
    carol_token = form_token(page)
    status, headers, _ = carol.form("/sign-out", {"form_token": carol_token})
    check(status == 303 and headers.get("Location") == "/sign-in", f"sign out: {status} {headers}")
    check(carol.request("GET", "/account")[0] == 303, "signed out: the account page redirects")
    page = carol.request("GET", "/sign-in")[2].decode()
    status, headers, _ = carol.form("/sign-in", {"login": "carol", "password": PASSWORD, "form_token": form_token(page)})
    check(status == 303 and headers.get("Location") == "/account", f"sign in: {status} {headers}")
    after = carol.cookie("onionpost_session").value
    check(after != before, "a new session token at sign-in")
    stale = Client(base).request("GET", "/account", headers={"Cookie": "onionpost_session=" + before})
    check(stale[0] == 303, "the signed-out token opens nothing")

    # Every form needs the session's own form token.
    page = carol.request("GET", "/account")[2].decode()
    carol_token = form_token(page)
    page = dave.request("GET", "/account")[2].decode()
    dave_token = form_token(page)
    forms = [
        ("/account/voucher", {"code": vouchers[5] if len(vouchers) > 5 else "x"}),
        ("/account/password", {"current_password": PASSWORD, "new_password": PASSWORD + "3"}),
        ("/account/delete", {"password": PASSWORD, "confirm": "yes"}),
        ("/identities", {"local_part": "carol"}),
        (f"/identities/{alice_identity['id']}/revoke", {"confirm": "yes"}),
        ("/app-passwords", {"name": "tablet"}),
        ("/app-passwords/app_x/revoke", {}),
        ("/contacts", {"contact": "carol@" + onion_host("carol")}),
        ("/contacts/ctc_x", {"display_name": "x"}),
        ("/contacts/ctc_x/key-change", {"fingerprint": "AB" * 20, "decision": "accept"}),
        ("/contacts/ctc_x/delete", {}),
        ("/contacts/ctc_x/introduce", {"to": "ctc_y", "from_identity": "idn_z"}),
        ("/aliases/x@gateway.test/revoke", {}),
        (f"/identities/{alice_identity['id']}/export", {"passphrase": "a long enough passphrase"}),
        (f"/identities/{alice_identity['id']}/carriers", {"carriers": ""}),
        (f"/identities/{alice_identity['id']}/carry-statement", {"carrier": onion_host("c"), "kind": "request"}),
        (f"/identities/{alice_identity['id']}/rotate-key", {}),
        ("/contacts-policy", {"confirm_introductions": "yes"}),
        ("/account/second-factor", {}),
        ("/account/second-factor/confirm", {"totp": "123456"}),
        ("/account/second-factor/off", {"password": PASSWORD, "totp": "123456"}),
        ("/sign-out", {}),
    ]
    for path, fields in forms:
        for bad in (None, "0" * 64, dave_token):
            sent = dict(fields) if bad is None else dict(fields, form_token=bad)
            status, _, _ = carol.form(path, sent)
            check(status == 403, f"POST {path} with form token {bad!r}: {status}")
        # And without any session: to the sign-in page, nothing done.
        status, headers, _ = Client(base).form(path, dict(fields, form_token=carol_token))
        check(status == 303 and headers.get("Location") == "/sign-in", f"POST {path} signed out: {status}")
    check("carol" in carol.request("GET", "/account")[2].decode(), "carol's account survived every forged form")
    # File uploads (a contact card, an identity bundle) need the token too.
    card, _ = gnupg_card("erin@" + onion_host("erin"))
    for path, files in (("/contacts/card", {"card": ("erin.vcf", card.encode())}),
                        ("/identities/import", {"bundle": ("x.bundle", b"not a bundle")})):
        for bad in (None, "0" * 64, dave_token):
            fields = {"passphrase": "a long enough passphrase"}
            if bad is not None:
                fields["form_token"] = bad
            body, content_type = multipart(fields, files)
            status, _, _ = carol.request("POST", path, body, content_type=content_type)
            check(status == 403, f"upload {path} with form token {bad!r}: {status}")
    body, content_type = multipart({"form_token": carol_token}, {"card": ("erin.vcf", card.encode())})
    status, headers, _ = carol.request("POST", "/contacts/card", body, content_type=content_type)
    check(status == 303 and "done=contact-added" in headers.get("Location", ""), f"a card uploaded: {status} {headers}")
    carol_contact = headers["Location"].split("?")[0].rsplit("/", 1)[1]
    check("erin@" in carol.request("GET", "/contacts")[2].decode(), "the uploaded card is listed")
    none = dave.request("GET", "/contacts/ctc_doesnotexist")
    other = dave.request("GET", f"/contacts/{carol_contact}")
    check(other[0] == none[0] == 404 and other[2] == none[2], "another's contact page reads like none")
    status, _, _ = dave.form(f"/contacts/{carol_contact}/delete", {"form_token": dave_token})
    check(status == 404, f"dave deleting carol's contact: {status}")
    check("erin@" in carol.request("GET", f"/contacts/{carol_contact}")[2].decode(), "carol's contact survived dave")

    # Another account's identity is "no such identity", exactly like none, for pages and forms.
    status, headers, page = carol.form("/identities", {"local_part": "carol", "form_token": carol_token})
    check(status == 303 and headers["Location"].startswith("/identities/"), f"carol's identity: {status} {headers}")
    carol_identity = headers["Location"].split("?")[0].rsplit("/", 1)[1]
    none = dave.request("GET", "/identities/idn_doesnotexist")
    for path in (f"/identities/{carol_identity}", f"/identities/{carol_identity}/qr.svg"):
        other = dave.request("GET", path)
        check(other[0] == 404 == none[0], f"dave GET {path}: {other[0]}")
        check(other[2] == none[2], f"another's identity reads like none ({path})")
    status, _, page = dave.form(f"/identities/{carol_identity}/revoke", {"confirm": "yes", "form_token": dave_token})
    check(status == 404, f"dave revoking carol's identity: {status}")
    page = carol.request("GET", f"/identities/{carol_identity}")[2].decode()
    check("carol@" in page and "Revoke" in page, "carol's identity survived dave")

    # An expired browser session is signed out.
    expire(data_dir, dave.cookie("onionpost_session").value)
    check(dave.request("GET", "/account")[0] == 303, "an expired session redirects to sign-in")
    status, _, _ = dave.form("/identities", {"local_part": "dave", "form_token": dave_token})
    check(status == 303, f"an expired session creates nothing: {status}")


def main():
    base, data_dir, *vouchers = sys.argv[1:]
    check(len(vouchers) >= 5, "five vouchers")
    alice_identity = api_checks(base, data_dir, vouchers)
    form_checks(base, data_dir, vouchers, alice_identity)
    print("portal_http: every check passed")


if __name__ == "__main__":
    main()
