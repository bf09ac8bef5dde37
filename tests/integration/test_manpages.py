"""test_manpages.py - the man pages in man/ (relayd(8), relayctl(8),
relayd.conf(5)) are clean mdoc and say what the code does (issue #10, point 6).

What is proved, and how (no daemon is started; the sources are read):

* Lint.  `mandoc -Tlint -W warning` prints nothing and exits 0 for each page.
  Style-level messages (`-W style`) fail the test too, except the ones that
  depend on the machine rather than on the page: "referenced manual not
  found" (relayd.conf(5) refers to relayd(8), which is not installed where the
  test runs; saslpasswd2(8), systemd(1) may be missing) and mandoc's note
  about an outdated mandoc.db.  mandoc is Debian's `mandoc` package.

* relayd.conf(5) documents every key conf/ accepts, with conf.c's default.
  The keys come from conf/*.c: every table `const struct conf_key NAME[] =
  { { "key", CONF_K_KIND, off, off2, flags, subtable }, ... }`, walked from
  `conf_top_keys`; a CONF_K_GROUP row names its subtable, a CONF_K_ROUTES row
  uses `conf_route_keys` (the table conf_set_routes() walks), so keys have
  dotted names: "hostname", "submit.listen", "router.routes.domain".  In the
  page a key is an `.It Ic key ...` line; its group is the `Ic` word of the
  nearest `.Ss` line above it (none: a top-level key).  The defaults are the
  assignments `c->FIELD = VALUE;` in conf_new_defaults(), matched to keys by
  the C_OFF(FIELD) of their row, and compared with the entry's
  `.Pq default: ...` line (numbers, sizes, durations, booleans, strings;
  derived defaults such as control_socket are not compared).  The page may
  not document keys conf/ does not accept, but for PENDING_KEYS.

* relayctl(8) documents every verb of relayctl's grammar, every option the
  grammar takes, and relayctl's command-line flags.  The grammar is read
  from the command tables in common/, ctl/, daemon/ and router/ (the table
  is moving): any array `const struct S NAME[] = { ... }` whose S or NAME
  contains "cmd", "command", "grammar" or "verb".  A top-level row's leading
  string literals (NULLs skipped) give its words, lower-case words up to the
  first other token: { { "queue", "list" }, ... }, { "hosts", NULL, ... }
  and { "queue flush QID...", ... } all work.  Options are the "--name"
  words in any string literal of those tables (option names and usage
  strings alike).  The flags are the getopt() string in ctl/*.c (relayd's,
  in daemon/*.c, for relayd(8)).  In the page a verb is an `.It Cm word word`
  line, an option a `Fl -name`, a flag an `.It Fl x` line.

* Every configuration in relayd.conf(5)'s EXAMPLES is accepted by `relayd -n`
  (RELAYD_BIN, else build/relayd; skipped when neither exists).  Quoted
  /etc/relayd/... paths are replaced by empty temporary files, since conf/
  checks that referenced files are readable.  Once conf/ accepts the `user`
  key, the test adds user = "nobody" (as root) or the current user, so that
  the check does not depend on a relayd account on the test machine.

* relayd(8)'s LOG FORMAT section lists exactly the events of the README's
  "Log format" table, each with the same keys: page entries are
  `.It Cm event , event ...` with the keys on `.Li` lines.
"""

import getpass
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAN = os.path.join(ROOT, "man")
PAGES = ["relayd.8", "relayctl.8", "relayd.conf.5"]

# Directories where relayctl's command table may live (it is being moved into
# one shared table; see the module docstring).
GRAMMAR_DIRS = ["common", "ctl", "daemon", "router"]

# Style messages that depend on the machine, not on the page.
STYLE_ALLOWED = ("referenced manual not found",)

# Keys the page documents ahead of conf.c (issue #10 points 1 and 3, being
# implemented); remove each once conf.c accepts it.
PENDING_KEYS = {"user", "control_group"}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def strip_c_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def mandoc_bin():
    return os.environ.get("MANDOC") or shutil.which("mandoc")


def page_lines(name):
    return read(os.path.join(MAN, name)).splitlines()


# ---- conf/: keys and defaults -------------------------------------------

CONF_TABLE = re.compile(r"const\s+struct\s+conf_key\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)\n\s*\}\s*;", re.S)
CONF_ROW = re.compile(r'\{\s*"([^"]+)"\s*,\s*(CONF_K_\w+)\s*,([^{}]*)\}')


def conf_sources():
    files = sorted(glob.glob(os.path.join(ROOT, "conf", "*.c")))
    return {f: strip_c_comments(read(f)) for f in files}


def conf_tables():
    """{table name: [(key, kind, [fields...]), ...]} from conf/*.c."""
    tables = {}
    for text in conf_sources().values():
        for m in CONF_TABLE.finditer(text):
            rows = []
            for r in CONF_ROW.finditer(m.group(2)):
                fields = [f.strip() for f in r.group(3).split(",")]
                rows.append((r.group(1), r.group(2), fields))
            tables[m.group(1)] = rows
    return tables


def conf_keys():
    """{dotted key: (kind, field, field2)} for every key conf/ accepts; the fields
    are the C_OFF() paths into struct conf, or None (route keys, groups)."""
    tables = conf_tables()
    if "conf_top_keys" not in tables:
        raise AssertionError("no table 'const struct conf_key conf_top_keys[]' in conf/*.c "
                             "(found: %s); adapt test_manpages.py" % sorted(tables))
    keys = {}

    def walk(table, prefix, depth=0):
        if table not in tables:
            raise AssertionError("conf/*.c: key table %s not found" % table)
        if depth > 4:
            raise AssertionError("conf/*.c: key tables nest too deep at %s" % table)
        for name, kind, fields in tables[table]:
            dotted = prefix + name
            off = re.match(r"C_OFF\(([\w.]+)\)", fields[0]) if fields else None
            off2 = re.match(r"C_OFF\(([\w.]+)\)", fields[1]) if len(fields) > 1 else None
            keys[dotted] = (kind, off.group(1) if off else None, off2.group(1) if off2 else None)
            sub = fields[-1] if fields else "NULL"
            if kind == "CONF_K_GROUP":
                walk(sub, dotted + ".", depth + 1)
            elif kind == "CONF_K_ROUTES":
                walk(sub if sub != "NULL" else "conf_route_keys", dotted + ".", depth + 1)
            elif sub != "NULL":     # a list of groups whose keys are in the row's table
                walk(sub, dotted + ".", depth + 1)
    walk("conf_top_keys", "")
    return keys


def c_defines(texts):
    defs = {}
    for text in texts:
        for m in re.finditer(r'^\s*#\s*define\s+(\w+)\s+"([^"]*)"', text, re.M):
            defs[m.group(1)] = m.group(2)
    return defs


def c_int(expr):
    """The value of a C integer constant expression such as "5 * 86400000ULL"."""
    expr = re.sub(r"(\d+)[ULul]+", r"\1", expr.strip())
    if not re.fullmatch(r"[\d\s*()+]+", expr):
        raise AssertionError("cannot evaluate C default %r" % expr)
    return eval(expr, {"__builtins__": {}})


def conf_defaults():
    """{struct field: python value} from the c->FIELD = VALUE; lines of conf_new_defaults()."""
    srcs = conf_sources()
    defs = c_defines(srcs.values())
    out = {}
    for text in srcs.values():
        m = re.search(r"\nconf_new_defaults\s*\(void\)\s*\{(.*?)\n\}", text, re.S)
        if m is None:
            continue
        body = m.group(1)
        # A list default: "static const uint64_t retry[] = { ... };" copied with memcpy.
        arrays = {a.group(1): a.group(2) for a in
                  re.finditer(r"(\w+)\s*\[\s*\]\s*=\s*\{([^}]*)\}", body)}
        for a in re.finditer(r"memcpy\(\s*c->([\w.]+)\s*,\s*(\w+)\s*,", body):
            if a.group(2) in arrays:
                out[a.group(1)] = [c_int(e) for e in arrays[a.group(2)].split(",") if e.strip()]
        for a in re.finditer(r"\bc->([\w.]+)\s*=\s*([^;]+);", body):
            field, expr = a.group(1), a.group(2).strip()
            s = re.fullmatch(r'xstrdup\(\s*(?:"([^"]*)"|(\w+))\s*\)', expr)
            if s:
                if s.group(1) is not None:
                    out[field] = s.group(1)
                elif s.group(2) in defs:
                    out[field] = defs[s.group(2)]
            elif expr in ("true", "false"):
                out[field] = expr == "true"
            elif re.fullmatch(r"CONF_TLS_[A-Z]+", expr):
                out[field] = expr[len("CONF_TLS_"):].lower()
            elif re.fullmatch(r"[\d\s*()+ULul]+", expr):
                out[field] = c_int(expr)
    if not out:
        raise AssertionError("no defaults found: conf_new_defaults() not in conf/*.c; adapt test_manpages.py")
    return out


def parse_duration(s):
    units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 7 * 86400000}
    if s == "0":
        return 0
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        return None
    return sum(int(a) * units[b] for a, b in parts)


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)B?", s, re.I)
    if m is None:
        return None
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[m.group(2).upper()]


def conf_page_entries():
    """{dotted key: text of its .Pq default line, or None} from relayd.conf.5."""
    entries = {}
    scope = None            # None: not in DESCRIPTION; "": top level; else the group
    lines = page_lines("relayd.conf.5")
    for i, line in enumerate(lines):
        if line.startswith(".Sh "):
            scope = "" if line.strip() == ".Sh DESCRIPTION" else None
        elif line.startswith(".Ss ") and scope is not None:
            m = re.search(r"\bIc\s+(\S+)", line)
            scope = m.group(1) if m else ""
        elif scope is not None:
            m = re.match(r"\.It Ic (\S+)", line)
            if m:
                dotted = scope + "." + m.group(1) if scope else m.group(1)
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                d = re.match(r"\.Pq default: (.*)$", nxt)
                entries[dotted] = d.group(1).strip() if d else None
    return entries


def page_default_value(text):
    """'Qq 25M' -> '25M', 'Cm info' -> 'info', 'Pa /x' -> '/x', '100' -> '100'."""
    words = [w for w in text.split() if w not in ("Qq", "Cm", "Li", "Pa", "Dq", "Ql")]
    return " ".join(words)


# ---- relayctl's grammar --------------------------------------------------

CMD_ARRAY = re.compile(r"const\s+struct\s+(\w+)\s+(\w+)\s*\[\s*\w*\s*\]\s*=\s*\{(.*?)\n\s*\}\s*;", re.S)


def top_level_rows(body):
    """The text of each { ... } at depth 1 of an initializer body."""
    rows, depth, start, in_str, i = [], 0, None, False, 0
    while i < len(body):
        ch = body[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
            if depth == 1:
                start = i
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                rows.append(body[start + 1:i])
                start = None
        i += 1
    return rows


def row_words(row):
    """Leading command words of a row: { { "queue", "list" }, ... } -> ("queue", "list")."""
    words = []
    for tok in re.finditer(r'\s*[{,]*\s*("(?:[^"\\]|\\.)*"|NULL|[^\s,{}]+)', row):
        t = tok.group(1)
        if t == "NULL":
            continue
        if not t.startswith('"'):
            break
        stop = False
        for w in t[1:-1].split():
            if re.fullmatch(r"[a-z][a-z-]*", w):
                words.append(w)
            else:
                stop = True
                break
        if stop or not words:
            break
    return tuple(words)


def relayctl_grammar():
    """(set of verb tuples, set of --options, list of 'file:array' read)."""
    verbs, opts, found = set(), set(), []
    for d in GRAMMAR_DIRS:
        for path in sorted(glob.glob(os.path.join(ROOT, d, "*.[ch]"))):
            text = strip_c_comments(read(path))
            for m in CMD_ARRAY.finditer(text):
                sname, aname, body = m.groups()
                if re.search(r"opt", sname + " " + aname, re.I):
                    # the option table beside the command table (common/control_cmds.c)
                    for lit in re.findall(r'"((?:[^"\\]|\\.)*)"', body):
                        opts.update(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", lit))
                    continue
                if not re.search(r"cmd|command|grammar|verb", sname + " " + aname, re.I):
                    continue
                rows = [row_words(r) for r in top_level_rows(body)]
                rows = [r for r in rows if r]
                if not rows:
                    continue
                found.append("%s:%s" % (os.path.relpath(path, ROOT), aname))
                verbs.update(rows)
                for lit in re.findall(r'"((?:[^"\\]|\\.)*)"', body):
                    opts.update(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", lit))
    return verbs, opts, found


def getopt_flags(dirname):
    letters = set()
    for path in sorted(glob.glob(os.path.join(ROOT, dirname, "*.c"))):
        for m in re.finditer(r'getopt\s*\([^,]+,[^,]+,\s*"([^"]*)"', read(path)):
            letters.update(c for c in m.group(1) if c.isalnum())
    return letters


def page_verbs(name):
    verbs = set()
    for line in page_lines(name):
        if not line.startswith(".It Cm "):
            continue
        toks = line.split()[1:]
        words = []
        for t in toks:
            if t == "Cm":
                continue
            if re.fullmatch(r"[A-Z][a-z][a-z]?", t):    # the next macro (Ar, Op, Fl, Oo ...)
                break
            words.append(t)
        verbs.add(tuple(words))
    return verbs


def page_it_flags(name):
    return {m.group(1) for m in re.finditer(r"^\.It Fl (\w)\b", read(os.path.join(MAN, name)), re.M)}


# ---- the README's log table ----------------------------------------------

def readme_log_events():
    """{event: set of keys} from the README's "Log format" table."""
    text = read(os.path.join(ROOT, "README.md"))
    m = re.search(r"^## Log format\n(.*?)(?=^## )", text, re.M | re.S)
    if m is None:
        raise AssertionError("README.md has no '## Log format' section")
    events = {}
    for line in m.group(1).splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) < 3 or not cols[0].startswith("`"):
            continue
        keys = set()
        for k in re.findall(r"`([^`]*)`", cols[1]):
            keys.update(k.split())
        for ev in re.findall(r"`([^`]*)`", cols[0]):
            events[ev] = keys
    if not events:
        raise AssertionError("README.md's Log format section has no event table")
    return events


def page_log_events():
    """{event: set of keys} from relayd.8's LOG FORMAT section."""
    events, cur, in_sec = {}, None, False
    for line in page_lines("relayd.8"):
        if line.startswith(".Sh "):
            in_sec = line.strip() == ".Sh LOG FORMAT"
            cur = None
            continue
        if not in_sec:
            continue
        if line.startswith(".It Cm "):
            names = [t for t in line.split()[2:] if t not in ("Cm", ",")]
            cur = set()
            for n in names:
                events[n] = cur
        elif line.startswith(".El"):
            cur = None
        elif cur is not None and line.startswith(".Li "):
            cur.update(t for t in line.split()[1:] if re.fullmatch(r"[a-z_]+", t))
    return events


class Lint(unittest.TestCase):
    """mandoc finds nothing wrong with any page."""

    def setUp(self):
        self.mandoc = mandoc_bin()
        if self.mandoc is None:
            self.fail("mandoc not found: install Debian's mandoc package (contrib/install-deps.sh), "
                      "or set MANDOC to its path")

    def lint(self, page, level):
        r = subprocess.run([self.mandoc, "-Tlint", "-W", level, os.path.join(MAN, page)],
                           capture_output=True, text=True, timeout=60)
        msgs = [l for l in (r.stdout + r.stderr).splitlines()
                if l.strip() and "outdated mandoc.db" not in l]
        return r.returncode, msgs

    def test_no_warnings_or_errors(self):
        for page in PAGES:
            with self.subTest(page):
                rc, msgs = self.lint(page, "warning")
                self.assertEqual(msgs, [], "mandoc -Tlint -W warning %s" % page)
                self.assertEqual(rc, 0, "mandoc -Tlint -W warning %s" % page)

    def test_no_style_messages_but_machine_dependent_ones(self):
        for page in PAGES:
            with self.subTest(page):
                _, msgs = self.lint(page, "style")
                bad = [m for m in msgs if not any(a in m for a in STYLE_ALLOWED)]
                self.assertEqual(bad, [], "mandoc -Tlint -W style %s" % page)


class ConfPage(unittest.TestCase):
    """relayd.conf(5) documents every key conf/ accepts, and its default."""

    def test_extraction_finds_the_known_keys(self):
        # The parser itself: it must see keys of every group, or it proves nothing.
        keys = conf_keys()
        for k in ("hostname", "submit.listen", "submit.login_rate_window", "router.host_backoff",
                  "router.routes", "router.routes.auth_password", "deliver.ca_file"):
            self.assertIn(k, keys)
        self.assertGreater(len(keys), 50)

    def test_every_key_is_documented(self):
        documented = conf_page_entries()
        missing = sorted(k for k in conf_keys() if k not in documented)
        self.assertEqual(missing, [], "keys conf/ accepts but relayd.conf.5 lacks "
                         "(add an .It Ic entry in the right .Ss group)")

    def test_only_real_keys_are_documented(self):
        keys = conf_keys()
        extra = sorted(k for k in conf_page_entries() if k not in keys and k not in PENDING_KEYS)
        self.assertEqual(extra, [], "relayd.conf.5 documents keys conf/ does not accept")

    def test_defaults_match_conf_c(self):
        defaults = conf_defaults()
        documented = conf_page_entries()
        checked = 0
        for key, (kind, field, field2) in sorted(conf_keys().items()):
            if field is None or field not in defaults or key not in documented:
                continue
            want = defaults[field]
            if kind == "CONF_K_BACKOFF":
                want = [want, defaults.get(field2)]
            with self.subTest(key):
                text = documented[key]
                self.assertIsNotNone(text, "%s: no '.Pq default: ...' line after its .It" % key)
                got = page_default_value(text)
                if kind == "CONF_K_DURATION":
                    self.assertEqual(parse_duration(got), want, "%s: page says %r" % (key, got))
                elif kind == "CONF_K_SIZE":
                    self.assertEqual(parse_size(got), want, "%s: page says %r" % (key, got))
                elif kind in ("CONF_K_UINT", "CONF_K_PORT"):
                    self.assertEqual(got, str(want), key)
                elif kind == "CONF_K_BOOL":
                    self.assertEqual(got, "true" if want else "false", key)
                elif kind in ("CONF_K_DURATIONS", "CONF_K_BACKOFF"):
                    items = re.findall(r'(?:\\\(dq|")([^"\\]*)(?:\\\(dq|")', text)
                    self.assertEqual([parse_duration(i) for i in items], want,
                                     "%s: page says %r" % (key, text))
                elif kind in ("CONF_K_STR", "CONF_K_PATH", "CONF_K_LOG_LEVEL", "CONF_K_TLS",
                              "CONF_K_MECHANISMS", "CONF_K_MX_POLICY"):
                    self.assertEqual(got, str(want), key)
                else:
                    continue
                checked += 1
        self.assertGreater(checked, 30, "too few defaults compared: is the parser still right?")


def conf_page_examples():
    """The literal blocks of relayd.conf.5's EXAMPLES section that are configurations."""
    blocks, cur, in_sec = [], None, False
    for line in page_lines("relayd.conf.5"):
        if line.startswith(".Sh "):
            in_sec = line.strip() == ".Sh EXAMPLES"
        elif in_sec and line.startswith(".Bd -literal"):
            cur = []
        elif in_sec and line.startswith(".Ed") and cur is not None:
            blocks.append("\n".join(cur) + "\n")
            cur = None
        elif cur is not None:
            cur.append(line.replace("\\&", "").replace("\\(dq", '"').replace("\\e", "\\"))
    return [b for b in blocks if re.search(r"^\s*\w+\s*=", b, re.M)]


class ConfExamples(unittest.TestCase):
    """Every configuration in relayd.conf(5)'s EXAMPLES passes relayd -n."""

    def test_examples_are_valid(self):
        relayd = os.environ.get("RELAYD_BIN") or os.path.join(ROOT, "build", "relayd")
        if not os.access(relayd, os.X_OK):
            self.skipTest("no relayd binary (set RELAYD_BIN or build into build/)")
        examples = conf_page_examples()
        self.assertGreaterEqual(len(examples), 3, "relayd.conf.5 EXAMPLES: expected three configurations")
        tmp = tempfile.mkdtemp(prefix="relayd-manpages-")
        self.addCleanup(shutil.rmtree, tmp, True)
        user = None
        if "user" in conf_keys():
            user = "nobody" if os.geteuid() == 0 else getpass.getuser()
        for i, text in enumerate(examples):
            with self.subTest(example=i + 1):
                def stand_in(m):
                    path = os.path.join(tmp, os.path.basename(m.group(1)))
                    open(path, "a").close()
                    return '"%s"' % path
                text = re.sub(r'"(/etc/relayd/[^"]+)"', stand_in, text)
                if user is not None:
                    text = 'user = "%s";\n' % user + text
                path = os.path.join(tmp, "example%d.conf" % (i + 1))
                with open(path, "w") as f:
                    f.write(text)
                r = subprocess.run([relayd, "-n", "-c", path], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, "example %d:\n%s\n%s" % (i + 1, text, r.stderr))


class RelayctlPage(unittest.TestCase):
    """relayctl(8) documents every verb, option and flag of relayctl."""

    def grammar(self):
        verbs, opts, found = relayctl_grammar()
        if not found:
            self.fail("no relayctl command table found in %s/*.[ch]: looked for "
                      "'const struct S NAME[] = {...}' with cmd/command/grammar/verb in S or NAME "
                      "and rows that start with the command words as string literals; "
                      "adapt relayctl_grammar() in test_manpages.py" % ",".join(GRAMMAR_DIRS))
        return verbs, opts, found

    def test_extraction_finds_the_known_verbs(self):
        verbs, opts, _ = self.grammar()
        for v in (("queue", "list"), ("hosts",), ("hosts", "reset"), ("route", "set"), ("stats",)):
            self.assertIn(v, verbs)
        self.assertIn("--json", opts)

    def test_every_verb_is_documented(self):
        verbs, _, found = self.grammar()
        missing = sorted(" ".join(v) for v in verbs - page_verbs("relayctl.8"))
        self.assertEqual(missing, [], "verbs in %s but not relayctl.8 (.It Cm ...)" % ", ".join(found))

    def test_every_option_is_documented(self):
        _, opts, found = self.grammar()
        text = read(os.path.join(MAN, "relayctl.8"))
        missing = sorted(o for o in opts if not re.search(r"\bFl " + re.escape(o[1:]) + r"\b", text))
        self.assertEqual(missing, [], "options in %s but not relayctl.8 (Fl -name)" % ", ".join(found))

    def test_every_flag_is_documented(self):
        for page, d in (("relayctl.8", "ctl"), ("relayd.8", "daemon")):
            with self.subTest(page):
                flags = getopt_flags(d)
                self.assertTrue(flags, "no getopt() string in %s/*.c" % d)
                self.assertEqual(sorted(flags - page_it_flags(page)), [],
                                 "getopt flags of %s/ missing from %s" % (d, page))


class LogFormat(unittest.TestCase):
    """relayd(8)'s LOG FORMAT lists the README's events with the same keys."""

    def test_events_and_keys_match_the_readme(self):
        readme, page = readme_log_events(), page_log_events()
        self.assertEqual(sorted(set(readme) - set(page)), [], "README events missing from relayd.8")
        self.assertEqual(sorted(set(page) - set(readme)), [], "relayd.8 events not in the README")
        for ev in sorted(readme):
            with self.subTest(ev):
                self.assertEqual(page[ev], readme[ev] - {"…", "..."}, ev)


if __name__ == "__main__":
    unittest.main()
