# Makefile — a thin wrapper around CMake (the real build is CMakeLists.txt).
#
#   make               build build/aioshell and build/aio.so (Release)
#   make run           install missing Debian packages, build, run the main job
#   make test          install missing Debian packages, build, run every test
#   make asan-test     the same suite on an ASan+UBSan build (build-asan/)
#   make ci            what .ci/run does: deps, build, tests, then the ASan suite
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make bench-deps    install the benchmarks' peers (Python, Node, wrk)
#   make report        replay every notebook experiment into report/ (FULL=1: the seeds' sizes)
#   make bench         build + every benchmark next to its peers (minutes; QUICK=1: one round)
#   make clean
BUILD ?= build
ASAN_BUILD ?= build-asan
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= Release
# The main job: the crawler when it exists, else the core demo.
MAIN_SCRIPT := $(firstword $(wildcard scripts/crawler.lua) scripts/hello_tasks.lua)

.PHONY: all build deps test-deps bench-deps bench run demo report test check asan asan-test ci install clean

all: build

# Configures once, then builds (CMake re-globs src/*.c and lua/**/*.lua by itself).
build:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD) -j$(JOBS)

deps:
	tools/install-deps.sh build

test-deps:
	tools/install-deps.sh test

bench-deps:
	tools/install-deps.sh bench

# Each benchmark prints its own tables with ratios against the peers; --quick makes them short.
bench: bench-deps build
	AIOSHELL=$(BUILD)/aioshell bench/startup/run.sh $(if $(QUICK),50,200)
	AIOSHELL=$(BUILD)/aioshell bench/tasks/run.sh $(if $(QUICK),--quick)
	$(BUILD)/aioshell bench/http/run.lua $(if $(QUICK),--quick)
	AIOSHELL=$(BUILD)/aioshell bench/workers/run.sh $(if $(QUICK),--quick)
	AIOSHELL=$(BUILD)/aioshell bench/rx/run.sh

run: deps build
	$(BUILD)/aioshell $(MAIN_SCRIPT)

demo: build
	$(BUILD)/aioshell scripts/hello_tasks.lua

# Replays every notebook experiment and writes report/report.md and report/index.html.
report: build
	$(BUILD)/aioshell scripts/notebooks.lua $(if $(FULL),--full)

test: test-deps build
	AIOSHELL=$(BUILD)/aioshell tools/run-tests.sh

# Runs the tests without the dependency check (for a quick loop while developing).
check: build
	AIOSHELL=$(BUILD)/aioshell tools/run-tests.sh

asan:
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIO_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# LeakSanitizer is on: at exit nothing we allocated may remain (docs/building.md, Sanitizers).
asan-test: test-deps asan
	AIOSHELL=$(ASAN_BUILD)/aioshell TEST_LOGS=$(ASAN_BUILD)/test-logs \
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	tools/run-tests.sh

ci: test-deps
	tools/ci.sh

install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
