-- test_helpers.lua — tests/lua/helpers.lua, the helpers the test files share: assert_error passes
-- only on an error holding every fragment, temp_dir / remove_dir make and remove directories under
-- /tmp only.

local lu = require "luaunit"
local helpers = require "helpers"
local fs = require "cunet.fs"

TestHelpers = {}

function TestHelpers:testAssertError()
  local msg = helpers.assert_error(function() error("conv2d: weight [8, 3] needs 4-D", 0) end, "conv2d", "[8, 3]")
  lu.assertEquals(msg, "conv2d: weight [8, 3] needs 4-D")
  lu.assertEquals(helpers.assert_error("labelled", function() error("y: 1", 0) end, "y", "1"), "y: 1")
  -- no error, or a message without a fragment: the assertion fails, naming the label
  local ok, err = pcall(helpers.assert_error, function() end, "x")
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err.msg or err), "expected an error")
  ok, err = pcall(helpers.assert_error, "case 7", function() error("other", 0) end, "wanted")
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err.msg or err), "case 7")
  lu.assertStrContains(tostring(err.msg or err), "wanted")
end

function TestHelpers:testTempDirAndRemoveDir()
  local dir = helpers.temp_dir()
  lu.assertStrContains(dir, "/tmp/")
  lu.assertTrue(fs.exists(dir .. "/."))
  local f = assert(io.open(dir .. "/file", "w"))
  f:close()
  helpers.remove_dir(dir)
  lu.assertFalse(fs.exists(dir))
  local path = helpers.temp_path()
  lu.assertFalse(fs.exists(path))
  helpers.remove_dir(nil)
  lu.assertErrorMsgContains("refusing a path outside /tmp", helpers.remove_dir, "/work")
  lu.assertErrorMsgContains("refusing a path outside /tmp", helpers.remove_dir, "/tmp/")
end

function TestHelpers:testMaxAbsDiff()
  local cn = require "cunet"
  lu.assertEquals(helpers.max_abs_diff(cn.tensor { 1, 2, 3 }, cn.tensor { 1, 2.5, 1 }), 2)
end

function TestHelpers:testReadAndWriteFile()
  local path = helpers.temp_path()
  helpers.write_file(path, "a\0b\n")
  lu.assertEquals(helpers.read_file(path), "a\0b\n")
  os.remove(path)
  lu.assertEquals(helpers.read_file(path, ""), "")
  helpers.assert_error(function() helpers.read_file(path) end, "cannot read", path)
end
