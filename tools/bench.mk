# bench.mk - `make bench`: runs tools/bench.sh against the daemon, the
# benchmark tool and the plugins of this build tree (not part of make check);
# `make bench-broker`: tools/bench-broker.sh, the pubsub and queue plugins
# side by side with Redis; `make bench-http`: tools/bench-http.sh, GET /health
# on an HTTP listener side by side with nginx. tools/minimal-server is the
# floor bench.sh measures plugboard against; built here, never installed.

noinst_PROGRAMS += tools/minimal-server
tools_minimal_server_SOURCES = tools/minimal-server.c

EXTRA_DIST += tools/bench.sh tools/bench-lib.sh tools/bench-pool.sh tools/bench-tls-flood.sh \
	tools/bench-broker.sh tools/bench-guide-server.py tests/haproxy.sh

bench: daemon/plugboard$(EXEEXT) tools/plugboard-bench$(EXEEXT) tools/minimal-server$(EXEEXT) \
		$(pkglib_LTLIBRARIES)
	BUILDDIR='$(abs_top_builddir)' '$(abs_top_srcdir)/tools/bench.sh' $(BENCH_FLAGS)

bench-broker: daemon/plugboard$(EXEEXT) tools/plugboard-broker-bench$(EXEEXT) \
		$(pkglib_LTLIBRARIES)
	BUILDDIR='$(abs_top_builddir)' '$(abs_top_srcdir)/tools/bench-broker.sh' $(BENCH_FLAGS)

EXTRA_DIST += tools/bench-http.sh
bench-http: daemon/plugboard$(EXEEXT) $(pkglib_LTLIBRARIES)
	BUILDDIR='$(abs_top_builddir)' '$(abs_top_srcdir)/tools/bench-http.sh' $(BENCH_FLAGS)

.PHONY: bench bench-broker bench-http
