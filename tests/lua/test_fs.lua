-- test_fs.lua — lua/cunet/fs.lua: exists, shell_quote, mkdir_p and write_atomic with paths a shell would mangle.

local lu = require "luaunit"
local helpers = require "helpers"
local fs = require "cunet.fs"

TestFs = {}

function TestFs:setUp()
  self.dir = helpers.temp_path()
end

function TestFs:tearDown()
  helpers.remove_dir(self.dir)
end

function TestFs:testMkdirPWithQuotesAndDollars()
  local path = self.dir .. "/it's $HOME `x`/a b/c"
  lu.assertFalse(fs.exists(path .. "/."))
  lu.assertTrue(fs.mkdir_p(path))
  lu.assertTrue(fs.exists(path .. "/."))
  lu.assertTrue(fs.mkdir_p(path)) -- already there
  local f = assert(io.open(path .. "/file", "w"))
  f:close()
  lu.assertTrue(fs.exists(path .. "/file"))
  lu.assertFalse(fs.exists(path .. "/nothing"))
end

function TestFs:testMkdirPFailureIsAMessage()
  local f = assert(io.open(self.dir, "w")) -- a file where a directory should go
  f:close()
  local ok, err = fs.mkdir_p(self.dir .. "/sub")
  lu.assertNil(ok)
  lu.assertStrContains(err, "cannot create the directory '" .. self.dir .. "/sub': Not a directory")
end

function TestFs:testShellQuoteRoundTrips()
  for _, s in ipairs { "plain", "it's", "a b", "$HOME", "`x`", "'", "" } do
    local p = io.popen("printf '%s' " .. fs.shell_quote(s))
    lu.assertEquals(p:read("a"), s)
    p:close()
  end
end

function TestFs:testWriteAtomic()
  assert(fs.mkdir_p(self.dir))
  local path = self.dir .. "/table.csv"
  lu.assertTrue(fs.write_atomic(path, "a,b\n1,2\n"))
  lu.assertTrue(fs.write_atomic(path, "a,b\n3,4\n")) -- replaced whole
  local f = assert(io.open(path))
  lu.assertEquals(f:read("a"), "a,b\n3,4\n")
  f:close()
  lu.assertFalse(fs.exists(path .. ".tmp"))
  local ok, err = fs.write_atomic(self.dir .. "/missing/x.csv", "x")
  lu.assertNil(ok)
  lu.assertStrContains(err, "cannot write '" .. self.dir .. "/missing/x.csv.tmp'")
end

function TestFs:testReadCsv()
  assert(fs.mkdir_p(self.dir))
  local path = self.dir .. "/t.csv"
  assert(fs.write_atomic(path, "steps,fid,sampler,note\r\n10,41.6,ddim,\n\n2,1e3,dpmpp_2m,x y\n"))
  local rows, header = fs.read_csv(path)
  lu.assertEquals(header, {"steps", "fid", "sampler", "note"})
  lu.assertEquals(rows, {{steps = 10, fid = 41.6, sampler = "ddim", note = ""}, {steps = 2, fid = 1000, sampler = "dpmpp_2m", note = "x y"}})
  lu.assertEquals(math.type(rows[1].steps), "integer")
  -- what goes wrong is named, with the file
  assert(fs.write_atomic(path, "a,b\n1,2\n3\n"))
  local r, err = fs.read_csv(path)
  lu.assertNil(r)
  lu.assertStrContains(err, path .. ": line 3 has 1 fields, the header 2")
  assert(fs.write_atomic(path, "a,b,a\n"))
  r, err = fs.read_csv(path)
  lu.assertNil(r)
  lu.assertStrContains(err, "column 'a' appears twice")
  assert(fs.write_atomic(path, ""))
  r, err = fs.read_csv(path)
  lu.assertNil(r)
  lu.assertStrContains(err, "empty (no header line)")
  r, err = fs.read_csv(self.dir .. "/none.csv")
  lu.assertNil(r)
  lu.assertStrContains(err, "cannot read '" .. self.dir .. "/none.csv'")
  -- a header alone: no rows
  assert(fs.write_atomic(path, "a,b\n"))
  lu.assertEquals(fs.read_csv(path), {})
end
