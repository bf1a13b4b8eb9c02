-- distributed — data parallelism over MPI: the engine's collectives (cn.distributed: init, rank,
-- world_size, all_reduce, broadcast, barrier, all_gather, finalize, abort) and what the trainer and
-- the sampling recipes build on them.
--
--   local dist = require "cunet.distributed"     -- also cn.distributed
--   dist.setup()                                 -- starts MPI when mpirun/srun started this process
--   local buckets = dist.Buckets(params)         -- gradients averaged over ranks in ~4 MB all-reduces
--   loss:backward(); buckets:average_grads()
--   dist.print("only rank 0 prints this")
--
-- Without a launcher (or with CUNET_DISTRIBUTED=0) nothing starts and world_size() is 1; every
-- helper then does what one process would. See docs/distributed.md.

local core = require "cunet.core"
local class = require "cunet.class"

local M = {}
for name, fn in pairs(core.distributed) do M[name] = fn end

--- The default gradient bucket: big enough that per-message latency is small against the
-- transfer, small enough to keep the flat copies cheap.
M.BUCKET_BYTES = 4 * 1024 * 1024

local function env_int(name) return math.tointeger(tonumber(os.getenv(name) or "")) end

--- The number of processes the launcher started (Open MPI's mpirun, MPICH's hydra, SLURM's srun
-- with --mpi=pmi2 or pmix), or nil when no launcher started this one.
function M.launched()
  if os.getenv("CUNET_DISTRIBUTED") == "0" then return nil end
  local n = env_int("OMPI_COMM_WORLD_SIZE") or env_int("PMI_SIZE") or env_int("PMIX_SIZE")
  if n then return n end
  if os.getenv("PMIX_RANK") or os.getenv("PMI_RANK") then return env_int("SLURM_NTASKS") or 1 end
  return nil
end

--- Starts MPI when a launcher started this process, once; returns rank, world_size. With several
-- ranks on one node each takes its share of the cores (a recipe's --threads set afterwards wins),
-- so they do not oversubscribe them. A launch of several processes by a cunet built without MPI is
-- an error (they would all write the same files).
function M.setup()
  local launched = M.launched()
  if launched and not M.initialized() then
    if not M.available() then
      if launched > 1 then
        error(string.format("distributed: started as one of %d processes (mpirun/srun), but this cunet was built " ..
          "without MPI: install libopenmpi-dev (make deps) and rebuild (make MPI=1)", launched), 0)
      end
      return 0, 1
    end
    M.init()
  end
  local world = M.world_size()
  if world > 1 then
    local cores = core.num_threads()
    core.set_num_threads(math.max(1, cores // math.max(1, M.local_size())))
  end
  return M.rank(), world
end

--- Runs fn(...) and returns its results. In a job of several ranks an error in fn prints
-- "rank R of N: message" and aborts the whole job at once, instead of leaving the other ranks
-- waiting for this one until CUNET_MPI_TIMEOUT.
function M.main(fn, ...)
  if M.world_size() <= 1 then return fn(...) end
  local r = table.pack(xpcall(fn, function(e) return tostring(e) end, ...))
  if not r[1] then
    io.stdout:flush()
    M.abort(r[2], 1)
  end
  return table.unpack(r, 2, r.n)
end

--- print on rank 0 only.
function M.print(...)
  if M.rank() == 0 then print(...) end
end

--- This rank's share of a global batch of n: the 1-based first index and the count. The batch
-- must split evenly (each rank's mean loss then weighs the same in the average).
function M.shard(n, what)
  local world, rank = M.world_size(), M.rank()
  if n % world ~= 0 then
    error(string.format("distributed: the %s %d does not split over %d ranks (make it a multiple of %d)",
      what or "batch size", n, world, world), 0)
  end
  local count = n // world
  return rank * count + 1, count
end

-- ---- gradient and parameter buckets ---------------------------------------------------------------

--- Parameters grouped in order into buckets of about bucket_bytes (default BUCKET_BYTES), each with
-- one flat buffer, so the gradients of many small tensors travel in a few large all-reduces.
local Buckets = class("Buckets")
M.Buckets = Buckets

function Buckets:__init(params, bucket_bytes)
  if bucket_bytes ~= nil and (math.type(bucket_bytes) ~= "integer" or bucket_bytes < 4) then
    error("Buckets: bucket_bytes must be an integer >= 4, got " .. tostring(bucket_bytes), 2)
  end
  local limit = (bucket_bytes or M.BUCKET_BYTES) // 4
  self.params, self.buckets = params, {}
  local current
  for _, p in ipairs(params) do
    local n = p:numel()
    if not current or (current.numel > 0 and current.numel + n > limit) then
      current = {params = {}, numel = 0}
      self.buckets[#self.buckets + 1] = current
    end
    current.params[#current.params + 1] = p
    current.numel = current.numel + n
  end
  for _, b in ipairs(self.buckets) do b.flat = core.zeros{b.numel} end
end

function Buckets:__tostring()
  local bytes = 0
  for _, b in ipairs(self.buckets) do bytes = bytes + 4 * b.numel end
  return string.format("Buckets(%d parameters, %d buckets, %.1f MB)", #self.params, #self.buckets, bytes / 2^20)
end

-- Applies fn(bucket) with each parameter's slice of the flat buffer: pack(p, slice) before the
-- collective, unpack(p, slice) after it.
local function each_bucket(self, pack, collective, unpack)
  core.no_grad(function()
    for _, b in ipairs(self.buckets) do
      local offset = 0
      for _, p in ipairs(b.params) do
        pack(p, b.flat:narrow(1, offset + 1, p:numel()))
        offset = offset + p:numel()
      end
      collective(b.flat)
      offset = 0
      for _, p in ipairs(b.params) do
        unpack(p, b.flat:narrow(1, offset + 1, p:numel()):view(p:shape()))
        offset = offset + p:numel()
      end
    end
  end)
end

--- Replaces every parameter's gradient by its mean over the ranks. A parameter without a gradient
-- on some ranks counts as zeros there and gets the mean; one without a gradient on every rank keeps
-- none (as on one process, where the optimizer skips it). No-op on one rank.
function Buckets:average_grads()
  if M.world_size() <= 1 then return end
  local has = {}
  for i, p in ipairs(self.params) do has[i] = p.grad and 1 or 0 end
  local anywhere = M.all_reduce(core.tensor(has), "max"):totable() -- one small collective
  local index = {}
  for i, p in ipairs(self.params) do index[p] = i end
  each_bucket(self, function(p, slice)
    local g = p.grad
    if g then slice:copy_(g:reshape{-1}) else slice:zero_() end
  end, function(flat) M.all_reduce(flat, "mean") end, function(p, slice)
    local g = p.grad
    if g then g:copy_(slice) elseif anywhere[index[p]] > 0 then p.grad = slice:clone() end
  end)
end

--- Copies root's parameter values to every rank (the start of a data-parallel run). No-op on one rank.
function Buckets:broadcast(root)
  if M.world_size() <= 1 then return end
  each_bucket(self, function(p, slice) slice:copy_(p:reshape{-1}) end,
    function(flat) M.broadcast(flat, root or 0) end, function(p, slice) p:copy_(slice) end)
end

-- ---- work split in chunks --------------------------------------------------------------------------

--- The chunks of 1..count this rank takes: r + 1, r + 1 + N, ... (round robin).
function M.my_chunks(count)
  local mine = {}
  for c = M.rank() + 1, count, M.world_size() do mine[#mine + 1] = c end
  return mine
end

--- Every rank's chunks in chunk order, on every rank: parts are this rank's results for
-- M.my_chunks(#sizes) in that order, sizes[c] the rows (dim 1) of chunk c, row_shape the other
-- dims. One all_gather; with one rank, just the concatenation.
function M.gather_chunks(parts, sizes, row_shape)
  local mine = #parts == 1 and parts[1] or (#parts > 0 and core.cat(parts, 1))
    or core.empty{0, table.unpack(row_shape)}
  local world = M.world_size()
  if world <= 1 then return mine end
  local all = M.all_gather(mine:contiguous())
  local offsets, pos = {}, 0
  for r = 0, world - 1 do
    for c = r + 1, #sizes, world do
      offsets[c], pos = pos, pos + sizes[c]
    end
  end
  local ordered = {}
  for c = 1, #sizes do ordered[c] = all:narrow(1, offsets[c] + 1, sizes[c]) end
  return #ordered == 1 and ordered[1] or core.cat(ordered, 1)
end

return M
