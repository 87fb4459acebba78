# packaging.mk - distribution packaging (Debian, RPM, systemd), the
# out-of-tree example plugin and the installed-SDK check; included last by
# Makefile.am.

# --- The example plugins, shipped as source ---------------------------------
exampledir = $(docdir)/examples/hello
dist_example_DATA = \
	plugins/examples/hello/hello.c \
	plugins/examples/hello/test_hello.c \
	plugins/examples/hello/Makefile \
	plugins/examples/hello/README.md
asyncexampledir = $(docdir)/examples/async
dist_asyncexample_DATA = \
	plugins/examples/async/later.c \
	plugins/examples/async/Makefile \
	plugins/examples/async/README.md
blockingexampledir = $(docdir)/examples/blocking
dist_blockingexample_DATA = \
	plugins/examples/blocking/lookup.c \
	plugins/examples/blocking/Makefile \
	plugins/examples/blocking/README.md

# --- The installed SDK works on its own (needs `make install`) ---------------
dist_check_SCRIPTS = packaging/sdk-check.sh
TESTS += packaging/sdk-check.sh

EXTRA_DIST += \
	packaging/debian/changelog \
	packaging/debian/control \
	packaging/debian/copyright \
	packaging/debian/rules \
	packaging/debian/source/format \
	packaging/debian/clean \
	packaging/debian/plugboard.install \
	packaging/debian/plugboard.dirs \
	packaging/debian/plugboard.docs \
	packaging/debian/plugboard.examples \
	packaging/debian/plugboard.README.Debian \
	packaging/debian/plugboard.postinst \
	packaging/debian/plugboard.postrm \
	packaging/debian/plugboard-dev.install \
	packaging/debian/plugboard-dev.docs \
	packaging/debian/plugboard.lintian-overrides \
	packaging/rpm/plugboard.spec \
	packaging/grafana/plugboard-dashboard.json \
	packaging/systemd/plugboard.service \
	packaging/systemd/tls-credentials.conf \
	packaging/systemd/privileged-ports.conf \
	packaging/test-packages.sh \
	packaging/emulate-unit.sh \
	packaging/syscall-filter-exec.c \
	packaging/fixtures/README.md

# --- Packages, built from the `make dist` tarball ----------------------------
# The .deb, .rpm and build records end up in packaging/out/ of the build tree.
# DEB_BUILD_OPTIONS=nocheck skips the test suite in the Debian build;
# RPMBUILD_FLAGS passes options to rpmbuild: `--nodeps` where rpm's own
# database knows none of the build dependencies (rpmbuild on Debian),
# `--nocheck` to skip %check.
PACKAGING_OUT = $(abs_top_builddir)/packaging/out

deb: dist
	@set -e; \
	work=$$(mktemp -d "$${TMPDIR:-/tmp}/plugboard-deb.XXXXXX"); \
	trap 'rm -rf "$$work"' EXIT; \
	case "$$(dpkg-parsechangelog -l $(srcdir)/packaging/debian/changelog -S Version)" in \
	  $(VERSION)-*) ;; \
	  *) echo "packaging/debian/changelog is not at version $(VERSION)" >&2; exit 1 ;; \
	esac; \
	tar -xzf $(distdir).tar.gz -C "$$work"; \
	cp -R "$$work/$(distdir)/packaging/debian" "$$work/$(distdir)/debian"; \
	(cd "$$work/$(distdir)" && dpkg-buildpackage -us -uc -b); \
	mkdir -p '$(PACKAGING_OUT)'; \
	rm -f '$(PACKAGING_OUT)'/*.deb; \
	mv "$$work"/*.deb "$$work"/*.changes "$$work"/*.buildinfo '$(PACKAGING_OUT)/'; \
	echo "packages in $(PACKAGING_OUT):"; ls -1 '$(PACKAGING_OUT)'

rpm: dist
	@set -e; \
	work=$$(mktemp -d "$${TMPDIR:-/tmp}/plugboard-rpm.XXXXXX"); \
	trap 'rm -rf "$$work"' EXIT; \
	test "$$(sed -n 's/^Version: *//p' $(srcdir)/packaging/rpm/plugboard.spec)" = '$(VERSION)' || \
	  { echo "packaging/rpm/plugboard.spec is not at version $(VERSION)" >&2; exit 1; }; \
	mkdir -p "$$work/SOURCES"; \
	cp $(distdir).tar.gz "$$work/SOURCES/"; \
	rpmbuild -bb $(RPMBUILD_FLAGS) --define "_topdir $$work" \
	  $(srcdir)/packaging/rpm/plugboard.spec; \
	mkdir -p '$(PACKAGING_OUT)'; \
	rm -f '$(PACKAGING_OUT)'/*.rpm; \
	find "$$work/RPMS" -name '*.rpm' -exec mv {} '$(PACKAGING_OUT)/' \; ; \
	echo "packages in $(PACKAGING_OUT):"; ls -1 '$(PACKAGING_OUT)'

clean-local: clean-packaging
clean-packaging:
	rm -rf packaging/out

.PHONY: deb rpm clean-packaging
