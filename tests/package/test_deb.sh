#!/usr/bin/env bash
# Builds the offhook .deb from a clean copy of this tree, installs it with apt-get, checks
# what it installed, then purges it and checks the purge. Run as root from anywhere:
#
#     bash tests/package/test_deb.sh
#
# The copy is the working tree as git sees it: tracked files plus untracked files that are
# not ignored (so build*/ and debhelper's leftovers stay out, and uncommitted work is
# tested). OFFHOOK_DEB_SOURCE=head copies `git archive HEAD` instead (committed files only).
# Needs the packages of scripts/setup.sh, debhelper among them. Idempotent: an offhook
# package already installed is purged first; everything the test made is removed at exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SOURCE=${OFFHOOK_DEB_SOURCE:-worktree}
export DEBIAN_FRONTEND=noninteractive
UNITS=(offhook-sipbridge.service offhook-component.service)
BINARIES=(offhook-sipbridge offhook-component offhookctl)
CONF_EXAMPLE=/etc/offhook/offhook.conf.example

T0=$(date +%s.%N)
PHASE_T=$T0
WORK=""
INSTALLED_BY_US=0
FAILURES=()

say() { printf '%s\n' "$*"; }
die() { printf 'test_deb: FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase_done() {
    say "  ($1: $(elapsed "$PHASE_T") s)"
    PHASE_T=$(date +%s.%N)
}
check() { # check DESCRIPTION COMMAND...: runs COMMAND, records a failure with its output
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        say "  ok    $desc"
    else
        say "  FAIL  $desc"
        [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/        | /' | head -20
        FAILURES+=("$desc")
    fi
}
installed() { dpkg-query -W -f='${Status}' offhook 2>/dev/null | grep -q "install ok installed"; }

cleanup() {
    local rc=$?
    if [ "$INSTALLED_BY_US" = 1 ] && dpkg-query -W offhook >/dev/null 2>&1; then
        apt-get purge -y -qq offhook >/dev/null 2>&1 || true
    fi
    # Pages man-db formatted and cached while the package was installed are stale now.
    rm -f /var/cache/man/cat5/offhook.conf.5* /var/cache/man/cat8/offhook*.8*
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT

# ---- prerequisites ------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (it installs and purges a package)"
for tool in dpkg-buildpackage dh apt-get git; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: install the packages of scripts/setup.sh (debhelper, dpkg-dev)"
done
VERSION=$(sed -n 's/^project(offhook VERSION \([0-9.]*\).*/\1/p' "$REPO/CMakeLists.txt")
[ -n "$VERSION" ] || die "no version in CMakeLists.txt's project()"
DEB_VERSION=$(dpkg-parsechangelog -l "$REPO/debian/changelog" -S Version)
say "offhook $VERSION, Debian package $DEB_VERSION (source: $SOURCE)"
[ "${DEB_VERSION%-*}" = "$VERSION" ] ||
    die "debian/changelog's version $DEB_VERSION does not match CMakeLists.txt's $VERSION"
if installed || dpkg-query -W offhook >/dev/null 2>&1; then
    say "note: an offhook package is already on this machine: purging it first"
    apt-get purge -y -qq offhook >/dev/null
fi

# ---- 1. a clean copy of the tree ----------------------------------------------------
say "== copying the tree"
WORK=$(mktemp -d /tmp/offhook-deb-test.XXXXXX)
chmod 0755 "$WORK" # apt's _apt user reads the .deb from here
SRC="$WORK/offhook-$VERSION"
mkdir "$SRC"
case "$SOURCE" in
    head)
        git -C "$REPO" archive --format=tar HEAD | tar -xf - -C "$SRC"
        [ -d "$SRC/debian" ] || die "debian/ is not committed: use OFFHOOK_DEB_SOURCE=worktree"
        ;;
    worktree)
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
            tar -cf - --null --no-recursion --ignore-failed-read -T - 2>/dev/null) | tar -xf - -C "$SRC"
        ;;
    *) die "OFFHOOK_DEB_SOURCE must be worktree or head, not '$SOURCE'" ;;
esac
for d in build build-pkg obj-x86_64-linux-gnu debian/offhook debian/.debhelper; do
    [ ! -e "$SRC/$d" ] || die "the copy holds $d: it is not clean"
done
say "  $(find "$SRC" -type f | wc -l) files in $SRC"
# A repository of the copy (index only, no commit: the build finds no commit to name),
# so that what the build leaves behind can be checked against .gitignore afterwards.
git -C "$SRC" init -q && git -C "$SRC" add -A ||
    die "cannot make a git index of the copy"
phase_done copy

# ---- 2. build -----------------------------------------------------------------------
say "== dpkg-buildpackage -b -us -uc"
(cd "$SRC" && dpkg-checkbuilddeps) ||
    die "build dependencies missing (above): install the packages of scripts/setup.sh"
if ! (cd "$SRC" && dpkg-buildpackage -b -us -uc) >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    die "dpkg-buildpackage failed (last lines above)"
fi
DEB=$(find "$WORK" -maxdepth 1 -name "offhook_${DEB_VERSION}_*.deb" | head -1)
[ -n "$DEB" ] || die "dpkg-buildpackage made no offhook_${DEB_VERSION}_*.deb"
chmod 0644 "$DEB"
say "  built $(basename "$DEB") ($(stat -c %s "$DEB") bytes)"
# The guide's name for it: a native package has no Debian revision.
check "the package is offhook_${VERSION}_$(dpkg --print-architecture).deb, as the guide says" \
    sh -c "[ '$(basename "$DEB")' = 'offhook_${VERSION}_$(dpkg --print-architecture).deb' ] &&
           grep -q 'offhook_${VERSION}_amd64.deb' '$SRC/docs/operator-guide.md'"
# Everything dpkg-buildpackage left in the tree is ignored by .gitignore, so that the
# next run of this test (which copies what git does not ignore) accepts the tree.
check "after dpkg-buildpackage, .gitignore covers every file the build left in the tree" \
    sh -c "out=\$(git -C '$SRC' status --porcelain --untracked-files=all | grep '^??');
           [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
phase_done build

# ---- 3. install ---------------------------------------------------------------------
say "== apt-get install ./$(basename "$DEB")"
INSTALLED_BY_US=1
# --no-install-recommends: redis-server is only recommended; the test does not need it.
if ! (cd "$WORK" && apt-get install -y --no-install-recommends "./$(basename "$DEB")") \
    >"$WORK/install.log" 2>&1; then
    tail -30 "$WORK/install.log" >&2
    die "apt-get install failed (last lines above)"
fi
phase_done install

# ---- 4. what was installed ----------------------------------------------------------
say "== checks"
check "package offhook $DEB_VERSION is installed" \
    sh -c "dpkg-query -W -f='\${Status} \${Version}' offhook | grep -qx 'install ok installed $DEB_VERSION'"
for b in "${BINARIES[@]}"; do
    check "/usr/sbin/$b --version prints '$b $VERSION'" \
        sh -c "out=\$(/usr/sbin/$b --version) && echo \"\$out\" && [ \"\$out\" = '$b $VERSION' ]"
done
check "$CONF_EXAMPLE is mode 640, owner root:offhook" \
    sh -c "s=\$(stat -c '%a %U:%G' $CONF_EXAMPLE) && echo \"found: \$s\" && [ \"\$s\" = '640 root:offhook' ]"
check "/etc/offhook is mode 750, owner root:offhook" \
    sh -c "s=\$(stat -c '%a %U:%G' /etc/offhook) && echo \"found: \$s\" && [ \"\$s\" = '750 root:offhook' ]"
check "offhook-sipbridge -c $CONF_EXAMPLE --check-config exits 0 (as root: checked as offhook)" \
    sh -c "out=\$(/usr/sbin/offhook-sipbridge -c $CONF_EXAMPLE --check-config) && echo \"\$out\" &&
           echo \"\$out\" | grep -q 'checking as user offhook'"
# The example ships no working secret: the component refuses it until one is set.
check "offhook-component refuses the example: no component secret" \
    sh -c "out=\$(/usr/sbin/offhook-component -c $CONF_EXAMPLE --check-config 2>&1); rc=\$?;
           echo \"\$out\"; [ \$rc = 1 ] &&
           echo \"\$out\" | grep -q 'secret (or secret_file) is required by offhook-component'"
# A secret file only root can read: root's --check-config checks as offhook and fails,
# as the unit's ExecStartPre= would; readable by group offhook, it passes.
SECRET_CONF=/etc/offhook/test-deb.conf
SECRET_FILE=/etc/offhook/test-deb.secret
printf 's3cret-test-deb\n' >"$SECRET_FILE"
chmod 0600 "$SECRET_FILE"
printf '[xmpp]\nsecret_file = %s\n[users]\nalice@localhost = sip:1001@127.0.0.1\n' \
    "$SECRET_FILE" >"$SECRET_CONF"
chgrp offhook "$SECRET_CONF" && chmod 0640 "$SECRET_CONF"
check "as root, --check-config fails on a secret file user offhook cannot read" \
    sh -c "out=\$(/usr/sbin/offhook-component -c $SECRET_CONF --check-config 2>&1); rc=\$?;
           echo \"\$out\"; [ \$rc = 1 ] && echo \"\$out\" | grep -q 'cannot read $SECRET_FILE'"
chgrp offhook "$SECRET_FILE" && chmod 0640 "$SECRET_FILE"
check "as root, --check-config passes once group offhook may read it" \
    /usr/sbin/offhook-component -c "$SECRET_CONF" --check-config
rm -f "$SECRET_CONF" "$SECRET_FILE"
# The units' ExecStartPre= runs the check as user offhook: it must read the file too.
check "as user offhook (like ExecStartPre=), --check-config exits 0" \
    setpriv --reuid=offhook --regid=offhook --init-groups \
    /usr/sbin/offhook-sipbridge -c "$CONF_EXAMPLE" --check-config
check "a user outside group offhook cannot read $CONF_EXAMPLE" \
    sh -c "! setpriv --reuid=nobody --regid=nogroup --clear-groups cat $CONF_EXAMPLE 2>/dev/null"
check "system user offhook exists (uid < 1000, home /nonexistent, no login shell)" \
    sh -c "getent passwd offhook && [ ! -e /nonexistent ] && getent passwd offhook |
           awk -F: '\$3 < 1000 && \$6 == \"/nonexistent\" && \$7 ~ /(nologin|false)\$/ { ok = 1 }
                    END { exit !ok }'"
check "group offhook exists and is user offhook's primary group" \
    sh -c "[ \"\$(id -gn offhook)\" = offhook ]"
check "postinst is idempotent (configure again)" \
    sh -c "/var/lib/dpkg/info/offhook.postinst configure '$DEB_VERSION' &&
           [ \"\$(stat -c '%a %U:%G' $CONF_EXAMPLE)\" = '640 root:offhook' ]"
for u in "${UNITS[@]}"; do
    check "unit /lib/systemd/system/$u is installed" test -f "/lib/systemd/system/$u"
    check "unit $u is not enabled" \
        sh -c "! ls /etc/systemd/system/*.wants/$u 2>/dev/null | grep ."
done
if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify accepts both units" \
        systemd-analyze verify "${UNITS[@]/#//lib/systemd/system/}"
else
    say "  skip  systemd-analyze verify (systemd-analyze is not installed)"
fi
check "man -w offhook.conf finds the page" sh -c "man -w offhook.conf"
for p in "5 offhook.conf" "8 offhook-sipbridge" "8 offhook-component" "8 offhookctl"; do
    check "man page $p renders without warnings" \
        sh -c "f=\$(man -w $p) && echo \"\$f\" && MANWIDTH=80 man --warnings -l \"\$f\" 2>&1 >/dev/null | (! grep .)"
done
# README.md and every docs/*.md, uncompressed (the units link to them with file: URLs).
for f in README.md copyright $(cd "$SRC/docs" && ls -- *.md); do
    check "/usr/share/doc/offhook/$f is installed" test -f "/usr/share/doc/offhook/$f"
done
# What the guide tells operators to copy: every deploy/ recipe but the units, as files
# (uncompressed), identical to the source.
EXAMPLES=/usr/share/doc/offhook/examples
for d in $(cd "$SRC/deploy" && ls -d -- */ | tr -d /); do
    [ "$d" = systemd ] && continue
    check "$EXAMPLES/$d/ holds deploy/$d/ as it is" \
        sh -c "diff -r '$SRC/deploy/$d' '$EXAMPLES/$d'"
done
for f in prosody/offhook.cfg.lua ejabberd/ejabberd.yml kamailio/kamailio.cfg \
         asterisk/pjsip.conf freeswitch/README.md grafana/offhook.json \
         prometheus/offhook.rules.yml; do
    check "example $f is installed" test -f "$EXAMPLES/$f"
done
if command -v promtool >/dev/null; then
    check "the installed alert rules pass promtool test rules" \
        sh -c "cd $EXAMPLES/prometheus && promtool test rules offhook.rules.test.yml"
else
    say "  skip  promtool test rules (promtool is not installed: Debian package prometheus)"
fi
if command -v lintian >/dev/null; then
    say "  lintian (informational):"
    lintian "$DEB" 2>&1 | sed 's/^/        | /' || true
fi
phase_done checks

# ---- 5. reinstall (the upgrade path of the maintainer scripts) ------------------------
say "== apt-get install --reinstall"
if (cd "$WORK" && apt-get install -y --reinstall --no-install-recommends \
    "./$(basename "$DEB")") >"$WORK/reinstall.log" 2>&1; then
    say "  ok    reinstall succeeds"
    check "after reinstall: $CONF_EXAMPLE is still 640 root:offhook" \
        sh -c "[ \"\$(stat -c '%a %U:%G' $CONF_EXAMPLE)\" = '640 root:offhook' ]"
else
    tail -30 "$WORK/reinstall.log" | sed 's/^/        | /'
    say "  FAIL  reinstall"
    FAILURES+=("apt-get install --reinstall")
fi
phase_done reinstall

# ---- 6. purge -----------------------------------------------------------------------
say "== apt-get purge offhook"
# An operator enables a unit; the purge must take the symlink away with the package.
ENABLED_LINK=""
if command -v systemctl >/dev/null && systemctl enable "${UNITS[0]}" >/dev/null 2>&1; then
    ENABLED_LINK=$(find /etc/systemd/system -path "*.wants/${UNITS[0]}" | head -1)
fi
if ! apt-get purge -y offhook >"$WORK/purge.log" 2>&1; then
    tail -30 "$WORK/purge.log" >&2
    FAILURES+=("apt-get purge -y offhook")
fi
INSTALLED_BY_US=0
check "package offhook is gone" sh -c "! dpkg-query -W offhook 2>/dev/null"
check "user offhook is removed" sh -c "! getent passwd offhook"
check "group offhook is removed" sh -c "! getent group offhook"
check "/etc/offhook is removed" test ! -e /etc/offhook
if [ -n "$ENABLED_LINK" ]; then
    check "the unit an operator enabled is disabled ($ENABLED_LINK removed)" \
        test ! -e "$ENABLED_LINK"
else
    say "  skip  enable-then-purge check (systemctl enable did not run here)"
fi
check "binaries and units are removed" \
    sh -c "! ls /usr/sbin/offhook-sipbridge /usr/sbin/offhookctl /lib/systemd/system/offhook-*.service 2>/dev/null | grep ."
phase_done purge

say "== total $(elapsed "$T0") s"
if [ ${#FAILURES[@]} -gt 0 ]; then
    say "test_deb: ${#FAILURES[@]} check(s) failed:"
    printf '  - %s\n' "${FAILURES[@]}"
    exit 1
fi
say "test_deb: all checks passed"
