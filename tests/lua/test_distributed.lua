-- tests/lua/test_distributed.lua — cn.distributed (engine/distributed.c, lua/cunet/distributed.lua):
-- the helpers on one process always; with MPI built in and an `mpirun` on the path, 2-rank jobs that
-- must agree with one rank (training losses, sampling), collectives, and a job losing a rank.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local dist = require "cunet.distributed"
local fs = require "cunet.fs"

local EXE = os.getenv("CUNET_EXE") or "./cunet"

local shell_quote = fs.shell_quote

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_losses(path)
  local losses = {}
  for line in io.lines(path) do
    local step, loss = line:match("^(%d+),([^,]+)")
    if step then losses[tonumber(step)] = tonumber(loss) end
  end
  return losses
end

-- ---- one process ---------------------------------------------------------------------------------

TestDistributedLocal = {}

function TestDistributedLocal:test_one_process_defaults()
  lu.assertEquals(type(dist.available()), "boolean")
  lu.assertIs(cn.distributed, dist)
  if dist.initialized() then return end -- run.lua itself under mpirun: nothing below holds
  lu.assertEquals(dist.rank(), 0)
  lu.assertEquals(dist.world_size(), 1)
  lu.assertEquals({dist.shard(8)}, {1, 8})
  lu.assertEquals(dist.my_chunks(3), {1, 2, 3})
  local x = dist.gather_chunks({cn.ones{2, 3}, cn.zeros{1, 3}}, {2, 1}, {3})
  lu.assertEquals(x:shape(), {3, 3})
  lu.assertEquals(x:sum():item(), 6)
  lu.assertEquals(dist.gather_chunks({}, {}, {3}):shape(), {0, 3})
  -- the collectives need init (or, without MPI, a rebuild)
  local ok, err = pcall(dist.all_reduce, cn.ones{2})
  lu.assertFalse(ok)
  lu.assertStrContains(err, dist.available() and "call cn.distributed.init() first" or "built without MPI")
end

function TestDistributedLocal:test_init_without_mpi_names_the_fix()
  lu.skipIf(dist.available(), "this build has MPI")
  local ok, err = pcall(dist.init)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "cn.distributed.init: this cunet was built without MPI")
  lu.assertStrContains(err, "make MPI=1")
end

function TestDistributedLocal:test_buckets_one_rank_is_identity()
  local a, b = cn.ones{3, 2}:requires_grad(true), cn.full({5}, 2):requires_grad(true)
  local buckets = dist.Buckets({a, b}, 24)
  lu.assertEquals(#buckets.buckets, 2) -- 6 floats fill the first 24-byte bucket
  lu.assertStrContains(tostring(buckets), "2 buckets")
  a.grad = cn.full({3, 2}, 0.5)
  buckets:average_grads()
  lu.assertEquals(a.grad:sum():item(), 3)
  lu.assertNil(b.grad)
end

-- ---- 2-rank jobs -----------------------------------------------------------------------------------

local function find_mpirun()
  if not dist.available() or dist.initialized() then return nil end
  local code, version = run("mpirun --version")
  if code ~= 0 then return nil end
  -- Open MPI refuses root without both switches (containers, CI); --oversubscribe: 2 ranks on 1 core
  local flags = version:match("Open MPI") and "--allow-run-as-root --oversubscribe " or ""
  -- under ASan (make SAN=1): Open MPI's own allocations kept until exit are not leaks of ours
  -- (tests/lsan-mpi.supp); its plugins stay loaded so the reports can name them
  local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua")
  local lsan = string.format("LSAN_OPTIONS=%s ", shell_quote("suppressions=" .. here .. "/../lsan-mpi.supp:" ..
    "fast_unwind_on_malloc=0:print_suppressions=0"))
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mca_base_component_disable_dlclose=1 " ..
    "PMIX_MCA_mca_base_component_disable_dlclose=1 " .. lsan .. "mpirun " .. flags
end

local MPIRUN = find_mpirun()
if not MPIRUN then
  print(string.format("test_distributed: 2-rank tests skipped: %s", not dist.available()
    and "this cunet was built without MPI (make deps; make MPI=1)" or "no mpirun on the path (apt-get install openmpi-bin)"))
end

-- A denoiser small enough for a few steps in well under a second: conv, + a projection of t, SiLU,
-- conv; `dropout` for the test of the per-rank model stream.
local NET_SOURCE = [[
local cn = require "cunet"
local nn = cn.nn
local M = {}
local Net = nn.class("DistNet", nn.Module)
function Net:__init(config)
  nn.Module.__init(self)
  self.config = config
  self.inp = nn.Conv2d(config.in_channels, 6, 3, {padding = 1})
  self.time = nn.Linear(1, 6)
  self.out = nn.Conv2d(6, config.in_channels, 3, {padding = 1})
  if (config.dropout or 0) > 0 then self.drop = nn.Dropout(config.dropout) end
end
function Net:forward(x, t)
  local h = (self.inp(x) + self.time(t:view{-1, 1} / 50):view{x:size(1), -1, 1, 1}):silu()
  if self.drop then h = self.drop(h) end
  return self.out(h)
end
function M.from_config(config) return Net(config) end
M.presets = {dist = {in_channels = 1, resolution = 8}}
return M
]]

TestDistributedMPI = {}

function TestDistributedMPI:setUp()
  lu.skipIf(not MPIRUN, "no MPI (see the line above)")
  self.dir = helpers.temp_dir()
  write(self.dir .. "/cunet_test_distnet.lua", NET_SOURCE)
  self.env = "LUA_PATH=" .. shell_quote(self.dir .. "/?.lua;;") .. " "
end

function TestDistributedMPI:tearDown()
  helpers.remove_dir(self.dir)
end

-- Runs `cunet script args` on n ranks (n = 0: without mpirun); returns the exit code, the output
-- and the wall time.
function TestDistributedMPI:cunet(n, script, args, env)
  local launcher = n > 0 and (MPIRUN .. "-np " .. n .. " ") or ""
  local t0 = cn.time()
  local code, out = run(self.env .. (env or "") .. launcher .. EXE .. " " .. script .. " " .. (args or ""))
  return code, out, cn.time() - t0
end

function TestDistributedMPI:script(name, text)
  local path = self.dir .. "/" .. name
  write(path, text)
  return path
end

function TestDistributedMPI:test_collectives()
  local path = self:script("collectives.lua", [[
local cn = require "cunet"
local dist = cn.distributed
local r, n = dist.init()
local function say(...) io.write(string.format("rank%d ", r), string.format(...), "\n") end
local t = cn.full({2, 3}, r + 1)
dist.all_reduce(t, "sum"); say("sum %g", t:sum():item())
t = cn.full({2}, r + 1); dist.all_reduce(t, "mean"); say("mean %g", t[1]:item())
t = cn.full({2}, r + 1); dist.all_reduce(t, "max"); say("max %g", t[1]:item())
t = cn.full({3}, r + 5); dist.broadcast(t, 1); say("broadcast %g", t:sum():item())
local base = cn.full({3, 2}, r + 1)
local view = base:transpose(1, 2) -- strided: reduced through a copy written back into base
dist.all_reduce(view, "sum"); say("strided %g %s", base:sum():item(), table.concat(dist.all_gather(view):shape(), "x"))
local g = dist.all_gather(cn.full({r + 1, 2}, r))
say("gather %s %g", table.concat(g:shape(), "x"), g:sum():item())
local ok, err = pcall(dist.all_reduce, cn.zeros(r == 0 and {2, 3} or {3, 2}))
say("mismatch %s %s", tostring(ok), err)
ok, err = pcall(dist.all_gather, cn.zeros(r == 0 and {1, 2} or {1, 3}))
say("gather mismatch %s", err)
-- chunks round robin over the ranks come back in chunk order
local sizes = {2, 1, 2}
local parts = {}
for _, c in ipairs(dist.my_chunks(#sizes)) do parts[#parts + 1] = cn.full({sizes[c], 1}, c) end
local chunks = {}
for i, v in ipairs(dist.gather_chunks(parts, sizes, {1}):view{-1}:totable()) do chunks[i] = string.format("%g", v) end
say("chunks %s", table.concat(chunks, ","))
-- gradients: averaged; a parameter with a gradient on rank 0 only gets half of it, one with none anywhere keeps none
local used, partly, unused = cn.ones{3}:requires_grad(true), cn.ones{2}:requires_grad(true), cn.ones{2}:requires_grad(true)
used.grad = cn.full({3}, r + 1)
if r == 0 then partly.grad = cn.full({2}, 4) end
dist.Buckets({used, partly, unused}, 8):average_grads()
say("grads %g %g %s", used.grad:sum():item(), partly.grad:sum():item(), tostring(unused.grad))
-- a model with dropout: every rank keeps the same parameters and generator through training
local net = require("cunet_test_distnet").from_config{in_channels = 1, dropout = 0.5}
local result = require("cunet.train").run{model = net, dataset = cn.rand{8, 1, 8, 8} * 2 - 1, steps = 3, batch_size = 4,
  T = 20, progress = "none", ema = false}
local flat = {}
for i, p in ipairs(net:parameters()) do flat[i] = p:detach():reshape{-1} end
local all = dist.all_gather(cn.cat(flat, 1):view{1, -1})
local drawn = cn.rng_state().counter - (1 << 40) -- blocks drawn past TRAIN_COUNTER: small, exact in float32
local counters = dist.all_gather(cn.tensor{drawn})
say("params same %s, rng same %s", tostring((all[1] - all[2]):abs():max():item() == 0),
  tostring(counters[1]:item() == drawn and counters[2]:item() == drawn))
say("loss %.9g", result.loss)
dist.barrier()
dist.finalize()
]])
  local code, out = self:cunet(2, path)
  lu.assertEquals(code, 0, out)
  for r = 0, 1 do
    local p = "rank" .. r .. " "
    lu.assertStrContains(out, p .. "sum 18")
    lu.assertStrContains(out, p .. "mean 1.5")
    lu.assertStrContains(out, p .. "max 2")
    lu.assertStrContains(out, p .. "broadcast 18")
    lu.assertStrContains(out, p .. "strided 18 4x3")
    lu.assertStrContains(out, p .. "gather 3x2 4")
    lu.assertStrContains(out, p .. "mismatch false cn.distributed.all_reduce: the ranks passed different shapes: " ..
      "rank 0 has [2, 3], rank 1 has [3, 2]")
    lu.assertStrContains(out, p .. "gather mismatch cn.distributed.all_gather: the ranks passed different shapes " ..
      "(only dim 1 may differ): rank 0 has [1, 2], rank 1 has [1, 3]")
    lu.assertStrContains(out, p .. "chunks 1,1,2,3,3")
    lu.assertStrContains(out, p .. "grads 4.5 4 nil")
    lu.assertStrContains(out, p .. "params same true, rng same true")
  end
  local l0, l1 = out:match("rank0 loss (%S+)"), out:match("rank1 loss (%S+)")
  lu.assertEquals(l0, l1) -- the logged loss is the global mean, the same on both
end

-- The recipe's losses on 2 ranks equal those of 1 process with the same global batch and seed, to
-- float32 summation tolerance: each rank sums its half of the batch (per-sample work is the same),
-- so only the order of the sums over the batch differs — |difference| <= 1e-5 x |loss| (measured
-- ~1e-7). Sampling splits the chunks over the ranks and gives the 1-process samples bit for bit.
function TestDistributedMPI:test_train_and_sample_match_one_rank()
  local images = self.dir .. "/images"
  fs.mkdir_p(images)
  cn.seed(5)
  for i = 1, 16 do cn.save_png(string.format("%s/%02d.png", images, i), cn.rand{1, 8, 8}) end
  local common = string.format("--model cunet_test_distnet --preset dist --data folder:%s --size 8 --batch 8 --T 50 " ..
    "--warmup 2 --checkpoint-every 0 --sample-every 0 --threads 1 --flip --steps 6 --out ", shell_quote(images))
  local code, out = self:cunet(0, "recipes/train_unet.lua", common .. shell_quote(self.dir .. "/one"))
  lu.assertEquals(code, 0, out)
  code, out = self:cunet(2, "recipes/train_unet.lua", common .. shell_quote(self.dir .. "/two"))
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "batch 8 over 2 ranks")
  local _, count = out:gsub("training: steps 1..6", "")
  lu.assertEquals(count, 1) -- rank 0 alone speaks
  local one, two = read_losses(self.dir .. "/one/loss.csv"), read_losses(self.dir .. "/two/loss.csv")
  lu.assertEquals(#two, 6)
  for step = 1, 6 do
    lu.assertAlmostEquals(two[step], one[step], 1e-5 * math.abs(one[step]), "step " .. step)
  end
  -- resumed on 2 ranks from the 1-process checkpoint, with a different N: the run goes on
  code, out = self:cunet(2, "recipes/train_unet.lua", common .. shell_quote(self.dir .. "/one") .. " --steps 8 --resume " ..
    shell_quote(self.dir .. "/one/checkpoint.safetensors"))
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "training (resumed): steps 7..8, batch 8 over 2 ranks")
  lu.assertEquals(#read_losses(self.dir .. "/one/loss.csv"), 8)
  -- an uneven split is refused on every rank before anything runs
  code, out = self:cunet(2, "recipes/train_unet.lua", common:gsub("%-%-batch 8", "--batch 7") .. shell_quote(self.dir .. "/odd"))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(out, "batch_size 7 does not split over 2 ranks")

  local ckpt = shell_quote(self.dir .. "/two/checkpoint.safetensors")
  for _, sampler in ipairs{"ddim", "ddpm"} do
    local args = string.format("--ckpt %s --sampler %s --steps 4 --n 5 --batch 2 --threads 1 --out %s/grid.png --tensor ", ckpt,
      sampler, shell_quote(self.dir))
    code, out = self:cunet(0, "recipes/sample.lua", args .. shell_quote(self.dir .. "/one.safetensors"))
    lu.assertEquals(code, 0, out)
    code, out = self:cunet(2, "recipes/sample.lua", args .. shell_quote(self.dir .. "/two.safetensors"))
    lu.assertEquals(code, 0, out)
    local a = cn.load(self.dir .. "/one.safetensors").samples
    local b = cn.load(self.dir .. "/two.safetensors").samples
    lu.assertEquals(b:shape(), {5, 1, 8, 8})
    lu.assertEquals((a - b):abs():max():item(), 0, sampler)
  end
end

-- One rank dies (SIGKILL) or hangs in the middle of training: the job ends with a message naming it
-- within seconds, not never.
function TestDistributedMPI:test_lost_rank_ends_the_job()
  local path = self:script("lose.lua", [[
local cn = require "cunet"
local dist = cn.distributed
local r = dist.init()
local net = require("cunet_test_distnet").from_config{in_channels = 1}
require("cunet.train").run{model = net, dataset = cn.rand{8, 1, 8, 8}, steps = 1000, batch_size = 4, T = 20,
  progress = "none", ema = false, on_step = function(step)
    if r == 1 and step == 3 then
      if arg[1] == "kill" then
        local f = io.open("/proc/self/stat")
        local pid = f:read("a"):match("^(%d+)")
        f:close()
        os.execute("kill -9 " .. pid)
      else
        local t0 = cn.time()
        while cn.time() - t0 < 20 do end -- busy, as a rank stuck in a kernel would be
      end
    end
  end}
]])
  local code, out, seconds = self:cunet(2, path, "kill")
  lu.assertNotEquals(code, 0)
  lu.assertStrMatches(out, ".*rank 1.*exited on signal 9.*")
  lu.assertTrue(seconds < 30, string.format("the job took %.1f s to end", seconds))
  code, out, seconds = self:cunet(2, path, "hang", "CUNET_MPI_TIMEOUT=2 ")
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(out, "cunet: rank 0 of 2: all_reduce waited 2 s for the other ranks (CUNET_MPI_TIMEOUT = 2 s)")
  lu.assertTrue(seconds < 15, string.format("the job took %.1f s to end", seconds))
end

-- fid_vs_steps on 2 ranks: the batches split over the ranks, rank 0 scores the gathered samples,
-- so FID and KID are those of one process (needs the MNIST digits and their classifier).
function TestDistributedMPI:test_fid_vs_steps_matches_one_rank()
  local fid = require "cunet.fid"
  lu.skipIf(not fid.checkpoint_path("mnist") or not fs.exists("data/mnist-images-idx3-ubyte.gz"),
    "no MNIST digits or classifier checkpoint (make data)")
  local args = "--ckpt checkpoints/study/authors_unet_028m_s0.safetensors --sampler ddim --steps 1,2 --n 6 --batch 2 " ..
    "--dataset mnist --split test --threads 1 --out "
  local env = "CUNET_CACHE=" .. shell_quote(self.dir .. "/cache") .. " "
  local code, out = self:cunet(0, "recipes/fid_vs_steps.lua", args .. shell_quote(self.dir .. "/one"), env)
  lu.assertEquals(code, 0, out)
  code, out = self:cunet(2, "recipes/fid_vs_steps.lua", args .. shell_quote(self.dir .. "/two"), env)
  lu.assertEquals(code, 0, out)
  local _, count = out:gsub("<%- best", "")
  lu.assertEquals(count, 1) -- rank 0 alone prints the table
  local function scores(path)
    local rows = {}
    for line in io.lines(path) do rows[#rows + 1] = line:match("^(%d+,[^,]+,[^,]+),") end
    return rows
  end
  local one, two = scores(self.dir .. "/one/fid_vs_steps_ddim.csv"), scores(self.dir .. "/two/fid_vs_steps_ddim.csv")
  lu.assertEquals(#one, 2)
  lu.assertEquals(two, one)
end
