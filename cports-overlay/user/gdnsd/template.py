# gdnsd for Chimera Linux, which has no package of it. cbuild builds this template; Outpost's
# tests only read it (cbuild can't run here), so it has never been built by cbuild.
#
# Before the first build, set sha256 to the real checksum of the release tarball: it could not
# be fetched where this template was written (no internet). Download it, check it against the
# upstream release, then: sha256sum gdnsd-3.8.1.tar.xz
#
# gdnsd 3.8 is autotools, not meson: the release tarball ships configure and the
# ragel-generated parsers, so no autoreconf, ragel or pkgconf is needed.
pkgname = "gdnsd"
pkgver = "3.8.1"
pkgrel = 0
build_style = "gnu_configure"
configure_args = [
    "--with-rundir=/run",
    "--without-systemdsystemunitdir",
]
configure_gen = []
# perl and pod2man (in perl) make the man pages at build time
hostmakedepends = ["perl"]
makedepends = [
    # provides local.target, which the service depends on
    "dinit-chimera",
    "libev-devel",
    # without it configure silently drops MaxMind (mmdb) support from the geoip plugin
    "libmaxminddb-devel",
    "libsodium-devel",
    "userspace-rcu-devel",
]
pkgdesc = "Authoritative DNS server with geographic balancing and failover"
license = "GPL-3.0-or-later"
url = "https://gdnsd.org"
source = f"https://github.com/gdnsd/gdnsd/releases/download/v{pkgver}/gdnsd-{pkgver}.tar.xz"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"  # PLACEHOLDER
# the testsuite needs Perl modules (Net::DNS and more) and ~300 local ports, and 3.8.1's does
# not work with Net::DNS 1.39 or newer (fixed in gdnsd 3.8.2)
options = ["!check"]


def post_install(self):
    # make install creates /run/gdnsd, /var/lib/gdnsd and /etc/gdnsd/{zones,geoip}; a package
    # may ship none of them, so tmpfiles.conf makes them on the host
    self.uninstall("run")
    self.uninstall("var")
    self.uninstall("etc")
    self.install_sysusers(self.files_path / "sysusers.conf")
    self.install_tmpfiles(self.files_path / "tmpfiles.conf")
    self.install_service(self.files_path / "gdnsd")
