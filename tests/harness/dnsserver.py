"""dnsserver.py - a real, tiny, authoritative DNS server on loopback for tests.

The integration tests point relayd's resolver (router.dns_servers) at this
server and change its zone while relayd runs.  It speaks DNS over UDP and TCP
(RFC 1035 section 4, hand-written packing and parsing, standard library only),
on one port for both, each served by its own thread.

    dns = DNSServer()                 # 127.0.0.1, a free port
    dns.start()                       # or: with DNSServer() as dns: ...
    dns.set_mx("example.net", [(10, "mx1.example.net"), (20, "mx2.example.net")])
    dns.set_a("mx1.example.net", ["127.0.0.2"])
    dns.set_mx_ips("example.com", [(10, "127.0.0.3")])   # MX + A in one go
    ... relayd resolves via 127.0.0.1:dns.port ...
    assert dns.count("example.net", "MX") >= 1
    dns.stop()

The zone (all thread-safe, may be changed at any time):

    set_mx(domain, [(pref, exchange), ...])   MX records (replaces earlier MX)
    set_null_mx(domain)                       a single "MX 0 ." (RFC 7505)
    set_a(name, [ip, ...]) / set_aaaa(...)    address records
    set_txt(name, [text, ...])                TXT records
    set_tlsa(name, [(usage, selector, mtype, data), ...])
                                              TLSA records (RFC 6698; data: bytes
                                              or hex); tlsa_name(host, port) gives
                                              "_PORT._tcp.HOST"
    set_secure(zone, secure=True)             answers for the zone and the names
                                              below it get the AD bit when the
                                              query asks with DO (or AD): what a
                                              validating resolver says of signed,
                                              valid data (bogus data: set_servfail)
    set_cname(name, target)                   an alias (drops the name's other records)
    set_nxdomain(name)                        the name does not exist
    set_servfail(name)                        every query for it gets SERVFAIL
    set_drop(name)                            queries for it are never answered
    clear(name)                               forget the name (then: NXDOMAIN)
    reset()                                   forget everything, and the query log

Every set_* that takes records also takes ttl= (default: the server's ttl,
0 unless given to the constructor, so that resolvers do not cache what the
tests change).

Answers:
  * names compare case-insensitively; a trailing dot is optional everywhere;
  * the AA bit is set, the id and the question are copied;
  * records of the asked type -> NOERROR with them;
  * a name the server knows, without records of that type -> NOERROR, empty
    answer (NODATA) and an SOA in the authority section;
  * an unknown name -> NXDOMAIN with an SOA in the authority section;
  * a CNAME -> the CNAME, followed (up to 8 links) to the target: its records of
    the asked type are added when the server has them; the RCODE is that of the
    last name in the chain (RFC 6604): NXDOMAIN when the target is unknown;
  * qtype ANY (and other meta types) -> NOTIMP; opcodes other than QUERY -> NOTIMP;
  * answers over UDP larger than 512 bytes are truncated (TC set, answer empty)
    so that the client retries over TCP; EDNS in queries is read only for its
    DO bit (no OPT in answers);
  * AD is set when the query has DO or AD and the name asked is in a zone
    marked with set_secure (RCODE NOERROR or NXDOMAIN);
  * malformed packets, and responses (QR=1), are silently ignored.

The query log: `dns.queries` is a list of (name, qtype) with the name lower-cased
without trailing dot and qtype a string ("MX", "A", "AAAA", "TYPE99" ...);
`dns.count(name, qtype=None)` counts entries; `dns.query_do` lists
(name, qtype, do) with do True when the query's OPT record had the DO bit; `dns.wait_for_query(name, qtype,
timeout)` waits for one.  Queries for dropped names are logged too.
"""

import ipaddress
import select
import socket
import struct
import threading
import time

__all__ = ["DNSServer", "QTYPES", "RCODES", "encode_name", "decode_name",
           "build_query", "parse_message"]

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
          "AAAA": 28, "SRV": 33, "OPT": 41, "TLSA": 52, "ANY": 255}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4,
          "REFUSED": 5}
RCODE_NAMES = {v: k for k, v in RCODES.items()}
CLASS_IN = 1

# Name states (besides "has records").
_NXDOMAIN = "nxdomain"
_SERVFAIL = "servfail"
_DROP = "drop"

SOA_MNAME = "ns.test"
SOA_RNAME = "hostmaster.test"


def qtype_name(t):
    """2 -> "NS", 15 -> "MX", 99 -> "TYPE99"."""
    return QTYPE_NAMES.get(t, "TYPE%d" % t)


def qtype_code(t):
    """"MX" / "mx" / 15 -> 15."""
    if isinstance(t, int):
        return t
    t = t.upper()
    if t in QTYPES:
        return QTYPES[t]
    if t.startswith("TYPE") and t[4:].isdigit():
        return int(t[4:])
    raise ValueError("unknown qtype %r" % t)


def norm(name):
    """Canonical form of a domain name: lower case, no trailing dot ("" = root)."""
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    return name.lower()


# ---------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------

class DNSFormatError(Exception):
    """A packet that does not parse."""


def encode_name(name, compress=None, offset=0):
    """Encode a domain name as labels.

    compress, if given, is a dict {lower-case suffix: offset} shared by one
    message: known suffixes become pointers and new ones are recorded (offset is
    where this name will start in the message).
    """
    name = name.rstrip(".")
    labels = name.split(".") if name else []
    out = bytearray()
    for i in range(len(labels)):
        suffix = ".".join(labels[i:]).lower()
        if compress is not None and suffix in compress:
            out += struct.pack("!H", 0xC000 | compress[suffix])
            return bytes(out)
        if compress is not None and offset + len(out) < 0x3FFF:
            compress[suffix] = offset + len(out)
        lab = labels[i].encode("idna") if not labels[i].isascii() else labels[i].encode()
        if not 0 < len(lab) < 64:
            raise ValueError("bad label in %r" % name)
        out.append(len(lab))
        out += lab
    out.append(0)
    return bytes(out)


def decode_name(msg, off):
    """Decode a (possibly compressed) name at msg[off:].  Returns (name, next_off)."""
    labels = []
    end = None
    jumps = 0
    total = 0
    while True:
        if off >= len(msg):
            raise DNSFormatError("name runs past the end")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise DNSFormatError("truncated pointer")
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if end is None:
                end = off + 2
            jumps += 1
            if jumps > 64 or ptr >= len(msg):
                raise DNSFormatError("bad compression pointer")
            off = ptr
            continue
        if n & 0xC0:
            raise DNSFormatError("unknown label type")
        off += 1
        if n == 0:
            break
        if off + n > len(msg):
            raise DNSFormatError("label runs past the end")
        total += n + 1
        if total > 255:
            raise DNSFormatError("name too long")
        labels.append(msg[off:off + n].decode("latin-1"))
        off += n
    return ".".join(labels), (end if end is not None else off)


def build_query(name, qtype, qid=0x1234, rd=True):
    """A query message (for tests and clients)."""
    flags = 0x0100 if rd else 0
    return (struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0)
            + encode_name(name) + struct.pack("!HH", qtype_code(qtype), CLASS_IN))


def _parse_rdata(msg, rtype, start, rdlen):
    rd = msg[start:start + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, rd)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, rd)
    if rtype in (2, 5, 12):
        return decode_name(msg, start)[0]
    if rtype == 15:
        pref = struct.unpack("!H", rd[:2])[0]
        return (pref, decode_name(msg, start + 2)[0])
    if rtype == 16:
        out, i = [], 0
        while i < len(rd):
            n = rd[i]
            out.append(rd[i + 1:i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
        return out
    if rtype == 6:
        mname, o = decode_name(msg, start)
        rname, o = decode_name(msg, o)
        return (mname, rname) + struct.unpack("!IIIII", msg[o:o + 20])
    return rd


def parse_message(msg):
    """Parse a whole DNS message (query or response) into a dict:
    {id, qr, opcode, aa, tc, rd, ra, rcode, rcode_name, question: [(name, qtype)],
     answer/authority/additional: [(name, type_name, ttl, data)]}.
    data: A/AAAA -> str, MX -> (pref, exchange), CNAME/NS/PTR -> str,
    TXT -> [str], SOA -> (mname, rname, serial, refresh, retry, expire, minimum),
    else bytes.  Raises DNSFormatError."""
    if len(msg) < 12:
        raise DNSFormatError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    res = {"id": qid, "qr": bool(flags & 0x8000), "opcode": (flags >> 11) & 0xF,
           "aa": bool(flags & 0x0400), "tc": bool(flags & 0x0200),
           "rd": bool(flags & 0x0100), "ra": bool(flags & 0x0080),
           "ad": bool(flags & 0x0020),
           "rcode": flags & 0xF, "question": [], "answer": [], "authority": [],
           "additional": []}
    res["rcode_name"] = RCODE_NAMES.get(res["rcode"], str(res["rcode"]))
    off = 12
    for _ in range(qd):
        name, off = decode_name(msg, off)
        if off + 4 > len(msg):
            raise DNSFormatError("truncated question")
        qt, qc = struct.unpack("!HH", msg[off:off + 4])
        off += 4
        res["question"].append((name, qtype_name(qt)))
    for sect, cnt in (("answer", an), ("authority", ns), ("additional", ar)):
        for _ in range(cnt):
            name, off = decode_name(msg, off)
            if off + 10 > len(msg):
                raise DNSFormatError("truncated record")
            rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            if off + rdlen > len(msg):
                raise DNSFormatError("truncated rdata")
            res[sect].append((name, qtype_name(rtype), ttl,
                              _parse_rdata(msg, rtype, off, rdlen)))
            off += rdlen
    return res


class _Writer:
    """Builds a response with name compression."""

    def __init__(self):
        self.buf = bytearray()
        self.comp = {}

    def name(self, n):
        self.buf += encode_name(n, self.comp, len(self.buf))

    def rr(self, name, rtype, ttl, rdata):
        self.name(name)
        self.buf += struct.pack("!HHI", rtype, CLASS_IN, ttl)
        lenpos = len(self.buf)
        self.buf += b"\0\0"
        start = len(self.buf)
        if rtype == 1:
            self.buf += socket.inet_pton(socket.AF_INET, rdata)
        elif rtype == 28:
            self.buf += socket.inet_pton(socket.AF_INET6, rdata)
        elif rtype == 5:
            self.name(rdata)
        elif rtype == 15:
            self.buf += struct.pack("!H", rdata[0])
            self.name(rdata[1])
        elif rtype == 16:
            for s in rdata:
                b = s.encode() if isinstance(s, str) else bytes(s)
                for i in range(0, max(len(b), 1), 255):
                    part = b[i:i + 255]
                    self.buf.append(len(part))
                    self.buf += part
        elif rtype == 6:
            self.name(rdata[0])
            self.name(rdata[1])
            self.buf += struct.pack("!IIIII", *rdata[2:])
        else:
            self.buf += rdata
        struct.pack_into("!H", self.buf, lenpos, len(self.buf) - start)


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

class DNSServer:
    """An authoritative DNS server over UDP and TCP on (host, port).

    port=0 picks a port that is free for both UDP and TCP; `.port` tells it
    (known right after construction).  `ttl` is the TTL of every record
    (and the SOA minimum) unless a set_* call says otherwise.
    """

    def __init__(self, host="127.0.0.1", port=0, ttl=0):
        self.host = host
        self.ttl = ttl
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # name -> {"state": None|_NXDOMAIN|_SERVFAIL|_DROP, "rr": {qtype: (ttl, [rdata])}}
        self._zone = {}
        self.queries = []
        self.query_do = []
        self._secure = set()
        self._threads = []
        self._conns = set()
        self._running = False
        self._udp = None
        self._tcp = None
        self._bind(port)

    # -- lifecycle ----------------------------------------------------------

    def _bind(self, port):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last = None
        for _ in range(50):
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                udp.bind((self.host, port))
                p = udp.getsockname()[1]
                tcp.bind((self.host, p))
            except OSError as e:
                udp.close()
                tcp.close()
                last = e
                if port:
                    raise
                continue
            self._udp, self._tcp, self.port = udp, tcp, p
            return
        raise last

    def start(self):
        """Listen and serve in background threads.  Returns self."""
        if self._running:
            return self
        if self._udp is None:
            self._bind(self.port)
        self._tcp.listen(64)
        self._running = True
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True,
                                 name="dns-%s" % target.__name__)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        """Stop serving and close every socket (the port is released)."""
        self._running = False
        for s in (self._udp, self._tcp):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(2)
        self._threads = []
        self._udp = self._tcp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def address(self):
        """"127.0.0.1:PORT", as relayd's router.dns_servers wants it."""
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    # -- zone ---------------------------------------------------------------

    def _entry(self, name):
        n = norm(name)
        e = self._zone.get(n)
        if e is None:
            e = self._zone[n] = {"state": None, "rr": {}}
        return e

    def _set(self, name, qtype, rdatas, ttl):
        with self._lock:
            e = self._entry(name)
            e["state"] = None
            if qtype == 5:
                e["rr"] = {}
            else:
                e["rr"].pop(5, None)
            e["rr"][qtype] = (self.ttl if ttl is None else ttl, list(rdatas))

    def set_mx(self, domain, mxs, ttl=None):
        """MX records: mxs = [(preference, exchange), ...] (replaces earlier MX)."""
        recs = [(int(p), norm(x)) for p, x in mxs]
        self._set(domain, 15, recs, ttl)

    def set_null_mx(self, domain, ttl=None):
        """A null MX (RFC 7505): the single record "MX 0 ."."""
        self._set(domain, 15, [(0, "")], ttl)

    def set_mx_ips(self, domain, mxs, ttl=None):
        """MX records and their A/AAAA in one call: mxs = [(pref, ip), ...].
        Exchange i (from 1) is named mx<i>.<domain>.  Returns the exchange names."""
        names = []
        for i, (pref, ip) in enumerate(mxs, 1):
            name = "mx%d.%s" % (i, norm(domain))
            if ipaddress.ip_address(ip).version == 6:
                self.set_aaaa(name, [ip], ttl)
            else:
                self.set_a(name, [ip], ttl)
            names.append((pref, name))
        self.set_mx(domain, names, ttl)
        return [n for _, n in names]

    def set_a(self, name, ips, ttl=None):
        """A records."""
        if isinstance(ips, str):
            ips = [ips]
        self._set(name, 1, [str(ipaddress.IPv4Address(i)) for i in ips], ttl)

    def set_aaaa(self, name, ips, ttl=None):
        """AAAA records."""
        if isinstance(ips, str):
            ips = [ips]
        self._set(name, 28, [str(ipaddress.IPv6Address(i)) for i in ips], ttl)

    def set_txt(self, name, texts, ttl=None):
        """TXT records: one record per string."""
        if isinstance(texts, str):
            texts = [texts]
        self._set(name, 16, [[t] for t in texts], ttl)

    def set_tlsa(self, name, records, ttl=None):
        """TLSA records: [(usage, selector, mtype, data), ...], data bytes or hex."""
        recs = []
        for u, sel, mt, data in records:
            if isinstance(data, str):
                data = bytes.fromhex(data)
            recs.append(struct.pack("!BBB", u, sel, mt) + bytes(data))
        self._set(name, 52, recs, ttl)

    @staticmethod
    def tlsa_name(host, port=25):
        """The TLSA owner name for host and port: "_PORT._tcp.HOST"."""
        return "_%d._tcp.%s" % (port, norm(host))

    def set_secure(self, zone, secure=True):
        """Answers for zone and the names below it get AD (when asked with DO)."""
        with self._lock:
            if secure:
                self._secure.add(norm(zone))
            else:
                self._secure.discard(norm(zone))

    def is_secure(self, name):
        n = norm(name)
        with self._lock:
            return any(n == z or n.endswith("." + z) for z in self._secure)

    def set_cname(self, name, target, ttl=None):
        """name is an alias of target (the name's other records are dropped)."""
        self._set(name, 5, [norm(target)], ttl)

    def _state(self, name, state):
        with self._lock:
            e = self._entry(name)
            e["state"] = state
            e["rr"] = {}

    def set_nxdomain(self, name):
        """The name does not exist (the same as never setting it)."""
        self._state(name, _NXDOMAIN)

    def set_servfail(self, name):
        """Every query for the name is answered SERVFAIL."""
        self._state(name, _SERVFAIL)

    def set_drop(self, name):
        """Queries for the name are never answered (resolver timeouts)."""
        self._state(name, _DROP)

    def clear(self, name, qtype=None):
        """Forget the name (qtype=None) or only its records of one type."""
        with self._lock:
            if qtype is None:
                self._zone.pop(norm(name), None)
            else:
                e = self._zone.get(norm(name))
                if e:
                    e["rr"].pop(qtype_code(qtype), None)

    def reset(self):
        """Forget the whole zone and the query log."""
        with self._lock:
            self._zone.clear()
            self._secure.clear()
            self.queries.clear()
            self.query_do.clear()

    # -- query log ----------------------------------------------------------

    def count(self, name, qtype=None):
        """How many queries for name (and qtype, if given) arrived so far."""
        n = norm(name)
        qt = None if qtype is None else qtype_name(qtype_code(qtype))
        with self._lock:
            return sum(1 for qn, t in self.queries if qn == n and (qt is None or t == qt))

    def wait_for_query(self, name, qtype=None, timeout=10, n=1):
        """Wait until count(name, qtype) >= n; returns the count, raises on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                c = self.count(name, qtype)
                if c >= n:
                    return c
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no %s query for %s within %ss (log: %r)"
                                       % (qtype or "any", name, timeout, self.queries[-20:]))
                self._cond.wait(left)

    def clear_queries(self):
        with self._lock:
            self.queries.clear()
            self.query_do.clear()

    # -- answering ----------------------------------------------------------

    def resolve(self, qname, qtype):
        """Answer a question from the zone.

        Returns None (drop) or (rcode, answers, with_soa) where answers is a list
        of (owner, type, ttl, rdata)."""
        answers = []
        name = norm(qname)
        seen = set()
        with self._lock:
            for _ in range(9):
                e = self._zone.get(name)
                if e is None or e["state"] == _NXDOMAIN:
                    return (RCODES["NXDOMAIN"], answers, True)
                if e["state"] == _DROP:
                    return None
                if e["state"] == _SERVFAIL:
                    return (RCODES["SERVFAIL"], [], False)
                rr = e["rr"]
                if qtype in rr:
                    ttl, datas = rr[qtype]
                    answers += [(name, qtype, ttl, d) for d in datas]
                    return (RCODES["NOERROR"], answers, False)
                if 5 in rr:
                    ttl, datas = rr[5]
                    answers.append((name, 5, ttl, datas[0]))
                    seen.add(name)
                    name = datas[0]
                    if name in seen:
                        return (RCODES["SERVFAIL"], [], False)
                    continue
                return (RCODES["NOERROR"], answers, True)
            return (RCODES["SERVFAIL"], [], False)

    def handle(self, data, tcp=False):
        """The response (bytes) to one query message, or None to stay silent."""
        try:
            if len(data) < 12:
                return None
            qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
            if flags & 0x8000:              # a response: ignore
                return None
            opcode = (flags >> 11) & 0xF
            rd = flags & 0x0100
            if qd != 1:
                if opcode != 0 or qd == 0:
                    return struct.pack("!HHHHHH", qid, 0x8000 | (opcode << 11) | rd
                                       | RCODES["FORMERR" if opcode == 0 else "NOTIMP"],
                                       0, 0, 0, 0)
                return None
            qname, off = decode_name(data, 12)
            if off + 4 > len(data):
                return None
            qtype, qclass = struct.unpack("!HH", data[off:off + 4])
            do = False
            if ar >= 1 and an == 0 and ns == 0:
                # the OPT record (RFC 6891): root name, TYPE 41, CLASS, TTL
                o = off + 4
                if len(data) >= o + 11 and data[o] == 0 and \
                        struct.unpack("!H", data[o + 1:o + 3])[0] == 41:
                    do = bool(struct.unpack("!I", data[o + 5:o + 9])[0] & 0x8000)
        except (DNSFormatError, struct.error, UnicodeError, IndexError):
            return None

        with self._cond:
            self.queries.append((norm(qname), qtype_name(qtype)))
            self.query_do.append((norm(qname), qtype_name(qtype), do))
            self._cond.notify_all()

        w = _Writer()
        aa = 0x0400
        base = 0x8000 | (opcode << 11) | aa | rd
        ad = 0x0020 if (do or flags & 0x0020) and self.is_secure(qname) else 0

        def header(rcode, nan, nns, tc=0):
            flag_ad = ad if rcode in (RCODES["NOERROR"], RCODES["NXDOMAIN"]) else 0
            return struct.pack("!HHHHHH", qid, base | tc | rcode | flag_ad, 1, nan, nns, 0)

        w.buf += b"\0" * 12
        try:
            plain = decode_name(encode_name(qname), 0)[0] == qname
        except (ValueError, UnicodeError, DNSFormatError):
            plain = False
        if plain:
            w.name(qname)           # (uncompressed; primes compression for the answers)
        else:
            w.buf += data[12:off]   # odd labels ("." inside one): echo the bytes
        w.buf += struct.pack("!HH", qtype, qclass)
        qend = len(w.buf)

        if opcode != 0:
            w.buf[0:12] = header(RCODES["NOTIMP"], 0, 0)
            return bytes(w.buf)
        if qclass not in (CLASS_IN, 255) or qtype in (0, 41, 251, 252, 253, 254, 255):
            w.buf[0:12] = header(RCODES["NOTIMP"], 0, 0)
            return bytes(w.buf)

        res = self.resolve(qname, qtype)
        if res is None:
            return None
        rcode, answers, with_soa = res
        try:
            for owner, t, ttl, d in answers:
                w.rr(owner, t, ttl, d)
        except (ValueError, UnicodeError, OSError, struct.error):
            del w.buf[qend:]
            w.buf[0:12] = header(RCODES["SERVFAIL"], 0, 0)
            return bytes(w.buf)
        nns = 0
        if with_soa:
            w.rr("", 6, self.ttl, (SOA_MNAME, SOA_RNAME, 1, 3600, 600, 86400, self.ttl))
            nns = 1
        w.buf[0:12] = header(rcode, len(answers), nns)
        if not tcp and len(w.buf) > 512:
            del w.buf[qend:]
            w.buf[0:12] = header(rcode, 0, 0, tc=0x0200)
        return bytes(w.buf)

    # -- transports ---------------------------------------------------------

    def _serve_udp(self):
        sock = self._udp
        while self._running:
            try:
                r, _, _ = select.select([sock], [], [], 0.2)
            except (OSError, ValueError):
                break
            if not r:
                continue
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                if not self._running:
                    break
                continue
            try:
                resp = self.handle(data, tcp=False)
            except Exception:       # never let one odd packet kill the server
                resp = None
            if resp is not None:
                try:
                    sock.sendto(resp, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        sock = self._tcp
        while self._running:
            try:
                r, _, _ = select.select([sock], [], [], 0.2)
            except (OSError, ValueError):
                break
            if not r:
                continue
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True,
                                 name="dns-tcp-conn")
            t.start()

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _tcp_conn(self, conn):
        with self._lock:
            self._conns.add(conn)
        try:
            conn.settimeout(30)
            while self._running:
                hdr = self._recv_exact(conn, 2)
                if hdr is None:
                    break
                (n,) = struct.unpack("!H", hdr)
                data = self._recv_exact(conn, n)
                if data is None:
                    break
                try:
                    resp = self.handle(data, tcp=True)
                except Exception:
                    resp = None
                if resp is not None:
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass
