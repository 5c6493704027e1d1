"""The suite's network guard, in every Python process a test starts (conftest puts this folder
first on PYTHONPATH, so Python imports it at start-up, and imports it in its own process too).

A test never reaches past the machine: a connection or a name lookup for anything but
loopback (127.0.0.0/8, ::1, localhost, this machine's own name) fails with an OSError, and is
written to the file SLIMCORE_TEST_NETWORK_LOG names, which conftest reads after every test
(code under test may swallow the OSError; the log still tells).
"""

import ipaddress
import os
import socket
import traceback

LOG = os.environ.get("SLIMCORE_TEST_NETWORK_LOG")
LOCAL_NAMES = {"localhost", "localhost.localdomain", "", socket.gethostname()}


def address_of(host):
    """The IP address `host` spells, or None for a name."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        return ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None


def local(host) -> bool:
    if host is None or str(host) in LOCAL_NAMES or str(host).endswith(".localhost"):
        return True
    address = address_of(host)
    return address is not None and (address.is_loopback or address.is_unspecified)


def refuse(host, lookup: bool) -> OSError:
    """The error for reaching `host`, logged: a lookup of a name is a name lookup (a resolver
    would be asked); of an address, the connection that follows it."""
    what = "name lookup" if lookup and address_of(host) is None else "connection"
    if LOG:
        with open(LOG, "a") as log:
            log.write(f"{what} {host} (pid {os.getpid()})\n")
            if os.environ.get("SLIMCORE_TEST_NETWORK_TRACE"):  # who asked, for debugging
                log.write("".join(traceback.format_stack()[:-2]))
    message = f"slimcore test guard: no {what} outside loopback ({host}); tests stay on 127.0.0.1"
    if lookup:
        return socket.gaierror(socket.EAI_NONAME, message)
    return OSError(101, message)  # ENETUNREACH


def install() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname
    real_gethostbyname_ex, real_gethostbyaddr = socket.gethostbyname_ex, socket.gethostbyaddr

    def guarded_connect(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
                raise refuse(address[0], lookup=False)
            return real(self, address)
        return connect

    def guarded_lookup(real):
        def lookup(host, *args, **kwargs):
            if not local(host):
                raise refuse(host, lookup=True)
            return real(host, *args, **kwargs)
        return lookup

    socket.socket.connect = guarded_connect(real_connect)
    socket.socket.connect_ex = guarded_connect(real_connect_ex)
    socket.getaddrinfo = guarded_lookup(real_getaddrinfo)
    socket.gethostbyname = guarded_lookup(real_gethostbyname)
    socket.gethostbyname_ex = guarded_lookup(real_gethostbyname_ex)
    socket.gethostbyaddr = guarded_lookup(real_gethostbyaddr)


if LOG:
    install()
