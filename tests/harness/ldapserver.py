"""ldapserver.py - the tests' own OpenLDAP server: a real slapd on loopback
with a small directory, started and stopped by the test.

    with LDAPServer() as ldap:               # slapd on 127.0.0.1:<free port>
        ldap.uri                             # "ldap://127.0.0.1:PORT/"
        ldap.add_ldif("dn: uid=x,...")       # more entries, through ldapadd
        ldap.stop(); ldap.start()            # an outage; same port, same data
        LDAPServer(tls=(cert, key))          # StartTLS offered with that certificate
        LDAPServer(ldapi=True).ldapi_uri     # also on a Unix socket

It is not the system slapd: each instance has its own slapd.conf, its own mdb
database in a temporary directory, and listens only on 127.0.0.1.  The
schemas are OpenLDAP's core, cosine and inetorgperson, plus a tiny test
schema (objectClass relaydMailUser, a multi-valued mailAlternateAddress
attribute, which the standard schemas lack).  The base is BASE
(dc=example,dc=org); the directory holds:

    cn=admin   the rootdn (ROOT_DN / ROOT_PW), used to load entries
    cn=relayd  a service account (BIND_DN / BIND_PW), the only one that may
               read the people; anonymous clients may only bind
    ou=people  alice (mail, mailAlternateAddress, userPassword "alicepw"),
               bob (mail, mailAlternateAddress "@bob.test", "bobpw"),
               carol (no address; "carolpw"), "st*r" (a login with a '*')

For other engineers: saslauthd -a ldap can use the same server.  Point its
ldap_servers at ldap.uri, ldap_search_base at "ou=people," + BASE,
ldap_filter at "(uid=%u)", and ldap_bind_dn / ldap_password at BIND_DN /
BIND_PW; the users above then log in with their userPassword values
(the PEOPLE dict: uid -> password).

HangingServer is the other half of an outage test: a TCP server on loopback
that accepts connections and never answers (a directory that hangs).

Needs Debian's slapd and ldap-utils (contrib/install-deps.sh installs them).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from relay import free_port

BASE = "dc=example,dc=org"
ROOT_DN = "cn=admin," + BASE
ROOT_PW = "adminpw"
BIND_DN = "cn=relayd," + BASE
BIND_PW = "relaydpw"
PEOPLE = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "st*r": "starpw"}

SLAPD = "/usr/sbin/slapd"

TEST_SCHEMA = """\
# relayd tests: a multi-valued alias attribute, as Sun/Oracle and many
# sites add it (test OIDs, under the IANA example enterprise arc 32473)
attributetype ( 1.3.6.1.4.1.32473.1.1.1 NAME 'mailAlternateAddress'
    DESC 'another address the user may send as'
    EQUALITY caseIgnoreIA5Match
    SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'relaydMailUser'
    DESC 'a user with alternate addresses' SUP top AUXILIARY
    MAY ( mailAlternateAddress ) )
"""

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {dir}/relayd-test.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{base}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/db
maxsize 10485760
access to attrs=userPassword
    by dn.exact="{binddn}" read
    by anonymous auth
    by * none
access to *
    by dn.exact="{binddn}" read
    by * none
"""

BASE_LDIF = """\
dn: {base}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {binddn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: relayd
userPassword: {bindpw}

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,{base}
objectClass: inetOrgPerson
objectClass: relaydMailUser
uid: alice
cn: Alice
sn: Smith
mail: alice@example.org
mailAlternateAddress: a.smith@example.org
mailAlternateAddress: postmaster@example.org
userPassword: alicepw

dn: uid=bob,ou=people,{base}
objectClass: inetOrgPerson
objectClass: relaydMailUser
uid: bob
cn: Bob
sn: Jones
mail: bob@example.org
mailAlternateAddress: @bob.test
userPassword: bobpw

dn: uid=carol,ou=people,{base}
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: White
userPassword: carolpw

dn: uid=st*r,ou=people,{base}
objectClass: inetOrgPerson
uid: st*r
cn: Star
sn: Star
mail: star@example.org
userPassword: starpw
"""


class LDAPError(Exception):
    pass


class LDAPServer:
    """A real slapd on 127.0.0.1 with its own configuration and database."""

    def __init__(self, port=None, tmpdir=None, tls=None, ldapi=False):
        """tls: (cert, key) PEM files for StartTLS (slapd must be able to read them).
        ldapi: also listen on a Unix socket, self.ldapi_uri (any local user may connect)."""
        self._own_tmp = tmpdir is None
        self.dir = tmpdir or tempfile.mkdtemp(prefix="slapd-")
        self.port = port or free_port()
        self.uri = "ldap://127.0.0.1:%d/" % self.port
        self.ldapi_uri = None
        self._listen = self.uri
        if ldapi:
            os.chmod(self.dir, 0o755)
            self.ldapi_path = os.path.join(self.dir, "ldapi")
            self.ldapi_uri = "ldapi://%s/" % self.ldapi_path.replace("/", "%2F")
            self._listen += " " + self.ldapi_uri
        self.base = BASE
        self.proc = None
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        with open(os.path.join(self.dir, "relayd-test.schema"), "w") as f:
            f.write(TEST_SCHEMA)
        self.conf = os.path.join(self.dir, "slapd.conf")
        with open(self.conf, "w") as f:
            text = SLAPD_CONF.format(dir=self.dir, base=BASE, rootdn=ROOT_DN, rootpw=ROOT_PW,
                                     binddn=BIND_DN)
            if tls is not None:     # global settings: before the database
                text = text.replace("database mdb\n", "TLSCertificateFile %s\n"
                                    "TLSCertificateKeyFile %s\ndatabase mdb\n" % tls)
            f.write(text)
        self._loaded = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def start(self, timeout=10):
        """Start slapd (again) and wait until it answers; load the directory
        the first time."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = open(os.path.join(self.dir, "slapd.out"), "ab")
        # -d 0: stay in the foreground (so the test owns the process), log nothing
        self.proc = subprocess.Popen([SLAPD, "-f", self.conf, "-h", self._listen, "-d", "0"],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run(["ldapwhoami", "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW],
                               capture_output=True)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LDAPError("slapd did not start: %s" % self.diagnostics())
            time.sleep(0.05)
        if not self._loaded:
            self.add_ldif(BASE_LDIF.format(base=BASE, binddn=BIND_DN, bindpw=BIND_PW))
            self._loaded = True
        return self

    def add_ldif(self, text):
        """Add entries (LDIF) as the rootdn, through ldapadd."""
        self._ldap("ldapadd", text)

    def modify_ldif(self, text):
        """Apply an LDIF change record as the rootdn, through ldapmodify."""
        self._ldap("ldapmodify", text)

    def _ldap(self, tool, text):
        r = subprocess.run([tool, "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW],
                           input=text.encode(), capture_output=True)
        if r.returncode != 0:
            raise LDAPError("%s: %s" % (tool, r.stderr.decode(errors="replace")))

    def stop(self, timeout=10):
        """Stop slapd (an outage); start() brings the same directory back."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    def close(self):
        self.stop()
        if self._own_tmp:
            shutil.rmtree(self.dir, ignore_errors=True)

    def diagnostics(self):
        try:
            with open(os.path.join(self.dir, "slapd.out"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


class HangingServer:
    """A TCP server on 127.0.0.1 that accepts and never says a word."""

    def __init__(self, port=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.uri = "ldap://127.0.0.1:%d/" % self.port
        self.accepted = 0
        self._conns = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(c)
            self.accepted += 1

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self._conns:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
