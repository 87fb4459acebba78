# bench.mk - `make bench`: runs tools/bench.sh against the daemon, the
# benchmark tool and the plugins of this build tree (not part of make check).

EXTRA_DIST += tools/bench.sh tools/bench-pool.sh tools/bench-tls-flood.sh \
	tools/bench-guide-server.py tests/haproxy.sh

bench: daemon/plugboard$(EXEEXT) tools/plugboard-bench$(EXEEXT) $(pkglib_LTLIBRARIES)
	BUILDDIR='$(abs_top_builddir)' '$(abs_top_srcdir)/tools/bench.sh' $(BENCH_FLAGS)

.PHONY: bench
