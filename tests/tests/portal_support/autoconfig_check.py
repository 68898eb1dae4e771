"""Checks a Thunderbird autoconfig document (clientConfig 1.1, the format Thunderbird's
autoconfig database and ISPs publish: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat)
as Thunderbird reads it, for portal.rs: well-formed XML; one emailProvider for the onion; an
IMAP incoming and an SMTP outgoing server on that onion with the fixed onion ports, plain
sockets (tor encrypts), cleartext passwords and the address as the login (%EMAILADDRESS%), so
the account's login, which would link its identities, never appears.

Usage: autoconfig_check.py DOCUMENT ONION; exits non-zero with a message on the first failed
expectation.
"""

import sys
import xml.etree.ElementTree as ElementTree

# What Thunderbird's reader (mailnews/base/prefs/content/accountcreation/readFromXML.js) takes
# for each element; anything else makes it skip the server.
SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
AUTHENTICATIONS = {"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM",
                   "TLS-client-cert", "OAuth2", "none", "client-IP-address", "smtp-after-pop"}


def check(condition, what):
    if not condition:
        raise SystemExit("FAILED: " + what)


def server(element, kind, onion, port):
    check(element.get("type") == kind, f"{element.tag} type {element.get('type')!r}")
    children = {child.tag: (child.text or "").strip() for child in element}
    for required in ("hostname", "port", "socketType", "authentication", "username"):
        check(required in children, f"{kind} server has {required}: {children}")
    check(children["hostname"] == onion, f"{kind} hostname {children['hostname']!r}")
    check(children["port"] == str(port), f"{kind} port {children['port']!r}")
    check(children["socketType"] in SOCKET_TYPES and children["socketType"] == "plain", f"{children}")
    check(children["authentication"] in AUTHENTICATIONS, f"{children}")
    check(children["username"] == "%EMAILADDRESS%", f"{kind} username {children['username']!r}")


def main():
    document, onion = sys.argv[1:]
    root = ElementTree.fromstring(document.encode())
    check(root.tag == "clientConfig" and root.get("version") == "1.1", f"root {root.tag} {root.attrib}")
    providers = root.findall("emailProvider")
    check(len(providers) == 1, f"one emailProvider: {len(providers)}")
    provider = providers[0]
    check(provider.get("id") == onion, f"provider id {provider.get('id')!r}")
    check([d.text for d in provider.findall("domain")] == [onion], "the domain is the onion")
    incoming = provider.findall("incomingServer")
    outgoing = provider.findall("outgoingServer")
    check(len(incoming) == 1 and len(outgoing) == 1, "one incoming and one outgoing server")
    server(incoming[0], "imap", onion, 143)
    server(outgoing[0], "smtp", onion, 587)
    print(f"autoconfig_check: the document for {onion} is what Thunderbird reads")


if __name__ == "__main__":
    main()
