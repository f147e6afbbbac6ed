"""A real OpenLDAP server for offhook's directory tests and benchmark: Debian's slapd,
started as a plain process on loopback in a temporary directory, with a generated
slapd.conf (mdb backend, the syncprov overlay unless asked not to) and a tree of users
with extensions and groups. Entries are added, changed and deleted while it runs with
ldap-utils (ldapadd, ldapmodify, ldapdelete), as an administrator would.

    slapd = Slapd(workdir).start()
    slapd.add_user("alice", ext="1001", groups=("Sales",))
    s.write_config(users=(), extra=slapd.offhook_config(pbx_port))
"""

import os
import signal
import subprocess

from harness import Proc, free_port, port_open, wait_until

SUFFIX = "dc=example,dc=com"
PEOPLE = "ou=people," + SUFFIX
ADMIN_DN = "cn=admin," + SUFFIX
ADMIN_PW = "adminpw"
OFFHOOK_DN = "cn=offhook," + SUFFIX
OFFHOOK_PW = "offhookpw"

SLAPD_CONF = """# Written by offhook's tests: a throwaway slapd on loopback.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
{schemas}modulepath /usr/lib/ldap
moduleload back_mdb
{moduleload_syncprov}
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
{tls}
# offhook reads 10,000 users and more in one search: no server-side size limit for it.
sizelimit unlimited
database mdb
maxsize 1073741824
suffix "{suffix}"
rootdn "{admin_dn}"
rootpw {admin_pw}
directory {dir}/db
index objectClass eq
index entryUUID,entryCSN eq
{overlay_syncprov}
# Only offhook's own account reads the people, as a directory's ACLs would have it.
access to attrs=userPassword by anonymous auth by * none
access to dn.subtree="{people}" by dn.exact="{offhook_dn}" read by * none
access to * by * read
"""

SYNCPROV = "overlay syncprov\nsyncprov-checkpoint 100 10\n"


def _ldif_value(v):
    """An LDIF attribute line's value part: base64 when the value needs it."""
    import base64
    if (not v or v[0] in " :<" or v[-1] == " " or
            any(ord(c) < 32 or ord(c) > 126 for c in v)):
        return ": " + base64.b64encode(v.encode()).decode()
    return " " + v


def user_ldif(uid, mail=None, ext=None, name=None, groups=(), extra=()):
    """The LDIF of one inetOrgPerson under ou=people. mail defaults to uid@localhost and
    name to uid's capitalized form; ext may be a list (several telephoneNumber values) or
    None (no phone); extra is a list of (attribute, value) pairs."""
    exts = [] if ext is None else ([ext] if isinstance(ext, str) else list(ext))
    attrs = [("objectClass", "inetOrgPerson"), ("uid", uid),
             ("cn", name or uid.capitalize()), ("sn", uid)]
    if mail is not False:
        attrs.append(("mail", mail or "%s@localhost" % uid))
    attrs += [("telephoneNumber", e) for e in exts]
    attrs += [("ou", g) for g in groups]
    attrs += list(extra)
    lines = ["dn: uid=%s,%s" % (uid, PEOPLE)]
    lines += ["%s:%s" % (a, _ldif_value(v)) for a, v in attrs]
    return "\n".join(lines) + "\n"


BASE_LDIF = """dn: {suffix}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {people}
objectClass: organizationalUnit
ou: people

dn: {offhook_dn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: offhook
userPassword: {offhook_pw}
""".format(suffix=SUFFIX, people=PEOPLE, offhook_dn=OFFHOOK_DN, offhook_pw=OFFHOOK_PW)


class Slapd:
    """slapd as a foreground process. syncprov=False: a server without RFC 4533 (offhook
    then polls). tls=(cert, key, ca) paths: StartTLS offered with that certificate.
    schemas: more of /etc/ldap/schema to load ("nis", "msuser": Active Directory's
    attributes, as OpenLDAP ships them)."""

    name = "slapd"

    def __init__(self, workdir, syncprov=True, tls=None, port=None, schemas=()):
        self.dir = os.path.join(workdir, "slapd")
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        self.port = port or free_port()
        self.url = "ldap://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.dir, "slapd.conf")
        tls_lines = ""
        if tls:
            cert, key, ca = tls
            tls_lines = ("TLSCertificateFile %s\nTLSCertificateKeyFile %s\n"
                         "TLSCACertificateFile %s\n" % (cert, key, ca))
        with open(self.conf, "w") as f:
            f.write(SLAPD_CONF.format(
                schemas="".join("include /etc/ldap/schema/%s.schema\n" % n for n in schemas),
                dir=self.dir, suffix=SUFFIX, admin_dn=ADMIN_DN, admin_pw=ADMIN_PW,
                people=PEOPLE, offhook_dn=OFFHOOK_DN, tls=tls_lines,
                moduleload_syncprov="moduleload syncprov" if syncprov else "",
                overlay_syncprov=SYNCPROV if syncprov else ""))
        self.secret = os.path.join(workdir, "ldap.secret")
        with open(self.secret, "w") as f:
            f.write(OFFHOOK_PW + "\n")
        os.chmod(self.secret, 0o600)
        self.proc = None
        self.loaded = False

    def load(self, ldif_text):
        """Adds entries offline (slapadd), before the first start: fast enough for the
        10,000 users of the benchmark. The base entries come first, once."""
        if not self.loaded:
            ldif_text = BASE_LDIF + "\n" + ldif_text
            self.loaded = True
        path = os.path.join(self.dir, "load.ldif")
        with open(path, "w") as f:
            f.write(ldif_text)
        out = subprocess.run(["slapadd", "-f", self.conf, "-l", path, "-q"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError("slapadd: %s" % out.stderr[-2000:])

    def start(self):
        if not self.loaded:
            self.load("")
        self.proc = Proc("slapd", ["slapd", "-f", self.conf, "-h", "ldap://127.0.0.1:%d/" %
                                   self.port, "-d", "0"], self.dir)
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), timeout=20,
                   what="slapd to listen")
        if not self.proc.alive():
            raise RuntimeError("slapd exited: %s" % self.proc.log()[-2000:])
        return self

    def stop(self):
        """Stops slapd (its database stays: start() brings the same tree back)."""
        if self.proc and self.proc.alive():
            self.proc.stop(signal.SIGTERM, timeout=20)
            wait_until(lambda: not port_open(self.port), timeout=10, what="slapd to stop")

    def log(self):
        return self.proc.log() if self.proc else ""

    def _tool(self, argv, stdin):
        out = subprocess.run(argv + ["-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PW],
                             input=stdin, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("%s: %s %s" % (argv[0], out.stdout[-1000:], out.stderr[-1000:]))
        return out.stdout

    def add(self, ldif_text):
        return self._tool(["ldapadd", "-c"], ldif_text)

    def add_user(self, uid, **kw):
        return self.add(user_ldif(uid, **kw))

    def modify(self, uid, changes):
        """changes: [("replace"|"add"|"delete", attribute, [values])] on uid's entry."""
        lines = ["dn: uid=%s,%s" % (uid, PEOPLE), "changetype: modify"]
        for op, attr, values in changes:
            lines.append("%s: %s" % (op, attr))
            lines += ["%s:%s" % (attr, _ldif_value(v)) for v in values]
            lines.append("-")
        return self._tool(["ldapmodify"], "\n".join(lines) + "\n")

    def delete(self, uid):
        return self._tool(["ldapdelete"], "uid=%s,%s\n" % (uid, PEOPLE))

    def search(self, filt="(objectClass=inetOrgPerson)", attrs=("dn",)):
        """The entries' LDIF as the administrator reads them."""
        out = subprocess.run(["ldapsearch", "-LLL", "-x", "-H", self.url, "-D", ADMIN_DN,
                              "-w", ADMIN_PW, "-b", PEOPLE, filt] + list(attrs),
                             capture_output=True, text=True, timeout=60)
        return out.stdout

    def offhook_config(self, pbx_port, extra="", url=None, attrs=None):
        """The [directory] section offhook needs for this server (the acceptance tests'
        key names), the AORs on 127.0.0.1:pbx_port. attrs replaces the filter and
        attribute lines (a string of key = value lines)."""
        if attrs is not None:
            return ("[directory]\nsource = ldap\nldap_url = %s\nbind_dn = %s\n"
                    "bind_password_file = %s\nbase = %s\naor_template = sip:%%s@127.0.0.1:%d\n"
                    "%s%s" % (url or self.url, OFFHOOK_DN, self.secret, PEOPLE, pbx_port,
                              attrs, extra))
        return ("[directory]\n"
                "source = ldap\n"
                "ldap_url = %s\n"
                "bind_dn = %s\n"
                "bind_password_file = %s\n"
                "base = %s\n"
                "filter = (objectClass=inetOrgPerson)\n"
                "jid_attr = mail\n"
                "aor_attr = telephoneNumber\n"
                "aor_template = sip:%%s@127.0.0.1:%d\n"
                "name_attr = cn\n"
                "group_attr = ou\n%s"
                % (url or self.url, OFFHOOK_DN, self.secret, PEOPLE, pbx_port, extra))
