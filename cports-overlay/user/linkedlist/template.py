pkgname = "linkedlist"
pkgver = "2.0.12"
pkgrel = 4
# dinit-chimera provides local.target, which the service depends on
makedepends = ["dinit-chimera"]
depends = ["python"]
pkgdesc = "Linked List web application"
license = "custom:none"
url = "https://linkedlist.org"
# the service reads its settings from /etc/default/linkedlist, which the admin owns
options = ["etcfiles"]


def install(self):
    # linkedlistd is Python (standard library only) and ships in files/: nothing to build
    self.install_bin(self.files_path / "linkedlistd")
    version = self.destdir / "usr/share/linkedlist/version"
    self.install_dir("usr/share/linkedlist")
    version.write_text(f"{self.pkgver}-r{self.pkgrel}\n")
    version.chmod(0o644)
    self.install_file(
        self.files_path / "linkedlist.env", "etc/default", name="linkedlist"
    )


def post_install(self):
    self.install_sysusers(self.files_path / "sysusers.conf")
    self.install_tmpfiles(self.files_path / "tmpfiles.conf")
    self.install_service(self.files_path / "linkedlist")
