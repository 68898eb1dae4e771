"""Drives onionpost's IMAP server with Python's imaplib (a real client), for imap_clients.rs.

Usage: imaplib_client.py SCENARIO HOST PORT [ARGS...]; exits non-zero with a message on the
first failed expectation.
"""

import imaplib
import ssl
import sys
import threading
import time


def check(condition, what):
    if not condition:
        raise SystemExit("FAILED: " + what)


def message(subject, body):
    return (
        "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def ok(result, what):
    typ, data = result
    check(typ == "OK", f"{what}: {typ} {data!r}")
    return data


def scenario_basic(host, port, user, password, other_user, other_password):
    imap = imaplib.IMAP4(host, int(port))
    ok(imap.login(user, password), "login")
    data = ok(imap.list(), "list")
    names = b"\n".join(data)
    check(b"INBOX" in names and b"\\Sent" in names and b"\\Trash" in names, f"list {names!r}")
    for index in range(1, 4):
        ok(imap.append("INBOX", r"(\Draft)", None, message(f"hello{index}", f"body {index}")), "append")
    typ, data = imap.select("INBOX")
    check(typ == "OK" and data == [b"3"], f"select {typ} {data}")
    data = ok(imap.fetch("1:3", "(FLAGS ENVELOPE RFC822.SIZE)"), "fetch envelope")
    check(len(data) == 3 and b"hello2" in data[1], f"fetch {data!r}")
    data = ok(imap.fetch("2", "(BODY.PEEK[])"), "fetch body")
    check(b"body 2" in data[0][1], f"body {data!r}")
    data = ok(imap.uid("FETCH", "1:*", "(UID BODYSTRUCTURE)"), "uid fetch bodystructure")
    check(b"TEXT" in data[0], f"bodystructure {data!r}")
    data = ok(imap.search(None, "SUBJECT", "hello3"), "search")
    check(data == [b"3"], f"search {data!r}")
    data = ok(imap.uid("SEARCH", None, "HEADER", "Message-ID", "hello1"), "uid search")
    check(data == [b"1"], f"uid search {data!r}")
    ok(imap.store("1", "+FLAGS", r"(\Flagged \Seen)"), "store")
    data = ok(imap.search(None, "FLAGGED"), "search flagged")
    check(data == [b"1"], f"flagged {data!r}")
    data = ok(imap.copy("1", "Trash"), "copy")
    typ, data = imap.uid("MOVE", "2", "Junk")
    check(typ == "OK", f"move {typ} {data}")
    data = ok(imap.search(None, "ALL"), "search all after move")
    check(data == [b"1 2"], f"after move {data!r}")
    ok(imap.store("1", "+FLAGS", r"(\Deleted)"), "store deleted")
    data = ok(imap.expunge(), "expunge")
    # imaplib also returns the EXPUNGE that MOVE sent (RFC 6851 §3.3).
    check(data == [b"2", b"1"], f"expunge {data!r}")
    typ, data = imap.status("Junk", "(MESSAGES)")
    check(typ == "OK" and b"MESSAGES 1" in data[0], f"status junk {data!r}")
    typ, data = imap.status("Trash", "(MESSAGES)")
    check(typ == "OK" and b"MESSAGES 1" in data[0], f"status trash {data!r}")
    typ, data = imap.getquotaroot("INBOX")
    check(typ == "OK", f"getquotaroot {typ} {data!r}")
    quota = data[1][0].decode()
    used = int(quota.split("STORAGE ")[1].split(" ")[0])
    check(used >= 1, f"quota usage {quota}")
    # A second account sees none of this.
    other = imaplib.IMAP4(host, int(port))
    ok(other.login(other_user, other_password), "second login")
    typ, data = other.select("INBOX")
    check(typ == "OK" and data == [b"0"], f"second account select {data!r}")
    typ, data = other.status("Junk", "(MESSAGES)")
    check(b"MESSAGES 0" in data[0], f"second account junk {data!r}")
    other.logout()
    imap.close()
    imap.logout()
    print("OK basic")


def idle_until(imap, wanted, seconds):
    """Sends IDLE and returns the untagged lines seen until one contains `wanted`."""
    tag = imap._new_tag().decode()
    imap.send(f"{tag} IDLE\r\n".encode())
    line = imap.readline()
    check(line.startswith(b"+"), f"idle continuation {line!r}")
    imap.sock.settimeout(seconds)
    seen = []
    try:
        while True:
            line = imap.readline()
            seen.append(line)
            if wanted in line:
                break
    finally:
        imap.sock.settimeout(None)
    imap.send(b"DONE\r\n")
    while True:
        line = imap.readline()
        if line.startswith(tag.encode()):
            check(b"OK" in line, f"idle done {line!r}")
            break
    return seen


def scenario_two_sessions(host, port, user, password):
    first = imaplib.IMAP4(host, int(port))
    second = imaplib.IMAP4(host, int(port))
    ok(first.login(user, password), "first login")
    ok(second.login(user, password), "second login")
    ok(first.create("Shared"), "create")
    ok(first.select("Shared"), "first select")
    ok(second.select("Shared"), "second select")

    def append_later():
        time.sleep(0.5)
        ok(second.append("Shared", None, None, message("seen-by-idle", "x")), "append")

    thread = threading.Thread(target=append_later)
    start = time.monotonic()
    thread.start()
    seen = idle_until(first, b"EXISTS", 5)
    elapsed = time.monotonic() - start - 0.5
    thread.join()
    check(any(b"1 EXISTS" in line for line in seen), f"idle saw {seen!r}")
    check(elapsed < 2.0, f"idle woke after {elapsed:.2f} s")

    def store_later():
        time.sleep(0.5)
        ok(second.noop(), "noop")
        ok(second.store("1", "+FLAGS", r"(\Flagged)"), "store")

    thread = threading.Thread(target=store_later)
    start = time.monotonic()
    thread.start()
    seen = idle_until(first, b"FETCH", 5)
    elapsed = time.monotonic() - start - 0.5
    thread.join()
    check(any(b"\\Flagged" in line for line in seen), f"idle saw {seen!r}")
    check(elapsed < 2.0, f"idle woke after {elapsed:.2f} s")

    # Expunge in one session, NOOP in the other reports it.
    ok(second.store("1", "+FLAGS", r"(\Deleted)"), "store deleted")
    ok(second.expunge(), "expunge")
    typ, data = first.noop()
    check(typ == "OK", "noop")
    untagged = first.untagged_responses
    check("EXPUNGE" in untagged, f"expunge not reported: {untagged!r}")
    first.logout()
    second.logout()
    print("OK two sessions")


def scenario_tls(host, port, user, password):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=context)
    ok(imap.login(user, password), "tls login")
    ok(imap.select("INBOX"), "tls select")
    imap.logout()
    print("OK tls")


def scenario_starttls(host, port, user, password):
    imap = imaplib.IMAP4(host, int(port))
    check("STARTTLS" in imap.capabilities, f"capabilities {imap.capabilities}")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    ok(imap.starttls(ssl_context=context), "starttls")
    check("STARTTLS" not in imap.capabilities, f"after starttls {imap.capabilities}")
    ok(imap.login(user, password), "login after starttls")
    ok(imap.select("INBOX"), "select")
    imap.logout()
    print("OK starttls")


def scenario_logindisabled(host, port, user, password):
    imap = imaplib.IMAP4(host, int(port))
    check("LOGINDISABLED" in imap.capabilities, f"capabilities {imap.capabilities}")
    try:
        imap.login(user, password)
        raise SystemExit("FAILED: login succeeded in cleartext")
    except imaplib.IMAP4.error as error:
        check("PRIVACYREQUIRED" in str(error), f"refusal {error}")
    print("OK logindisabled")


def scenario_onion(host, port, owner, owner_password, other, other_password):
    replies = []
    for user, password in [(other, other_password), (other, "wrong password"), ("nobody", "x")]:
        imap = imaplib.IMAP4(host, int(port))
        check("LOGINDISABLED" not in imap.capabilities, f"onion capabilities {imap.capabilities}")
        try:
            imap.login(user, password)
            raise SystemExit(f"FAILED: {user} logged in through another identity's onion")
        except imaplib.IMAP4.error as error:
            replies.append(str(error))
        imap.logout()
    check(len(set(replies)) == 1, f"replies differ: {replies}")
    check("invalid credentials" in replies[0], f"reply {replies[0]}")
    imap = imaplib.IMAP4(host, int(port))
    ok(imap.login(owner, owner_password), "owner login")
    ok(imap.select("INBOX"), "owner select")
    imap.logout()
    print(f"OK onion ({replies[0]})")


def scenario_quota(host, port, user, password, at_least_kib):
    imap = imaplib.IMAP4(host, int(port))
    ok(imap.login(user, password), "login")
    typ, data = imap.getquotaroot("INBOX")
    check(typ == "OK", f"getquotaroot {typ} {data!r}")
    check(data[0] == [b'INBOX ""'], f"quotaroot {data!r}")
    quota = data[1][0].decode()
    used = int(quota.split("STORAGE ")[1].split(" ")[0])
    limit = int(quota.split("STORAGE ")[1].split(" ")[1].rstrip(")"))
    check(used >= int(at_least_kib) and limit > used, f"quota {quota}, wanted at least {at_least_kib} KiB")
    if int(at_least_kib) == 0:
        check(used == 0, f"empty account uses {used} KiB")
    imap.logout()
    print(f"OK quota {quota}")


if __name__ == "__main__":
    scenario = sys.argv[1]
    globals()["scenario_" + scenario](*sys.argv[2:])
